package challenge

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Challenge is one parsed challenge of a WWW-Authenticate header.
type Challenge struct {
	// Scheme is the auth-scheme as sent (compare with strings.EqualFold).
	Scheme string
	// Token68 is the token68 form of the credentials, if the challenge used it.
	Token68 string
	// Params maps lowercased auth-param names to their unquoted values.
	Params map[string]string
}

// Parse parses WWW-Authenticate field values (RFC 9110 §11.6.1) into their
// challenges, in order. A value may hold several comma-separated challenges. It
// returns an error for a syntax error or for a parameter repeated within one
// challenge (RFC 6750 §3 forbids that).
func Parse(values ...string) ([]Challenge, error) {
	var out []Challenge
	for _, v := range values {
		p := &parser{s: v}
		cs, err := p.challenges()
		if err != nil {
			return nil, fmt.Errorf("parsing WWW-Authenticate %q: %w", v, err)
		}
		out = append(out, cs...)
	}
	return out, nil
}

// Format writes c back as a challenge, parameters sorted by name and every value
// quoted; Parse(Format(c)) yields c again for any c that Parse produced.
func Format(c Challenge) string {
	var b strings.Builder
	b.WriteString(c.Scheme)
	if c.Token68 != "" {
		b.WriteByte(' ')
		b.WriteString(c.Token68)
		return b.String()
	}
	for i, k := range slices.Sorted(maps.Keys(c.Params)) {
		if i == 0 {
			b.WriteByte(' ')
		} else {
			b.WriteString(", ")
		}
		b.WriteString(k)
		b.WriteString(`="`)
		v := c.Params[k]
		for j := 0; j < len(v); j++ {
			if v[j] == '"' || v[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(v[j])
		}
		b.WriteByte('"')
	}
	return b.String()
}

type parser struct {
	s string
	i int
}

func (p *parser) eof() bool  { return p.i >= len(p.s) }
func (p *parser) peek() byte { return p.s[p.i] }

func (p *parser) skipOWS() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

// skipSeparators skips OWS and empty list elements (RFC 9110 §5.6.1 lets a
// recipient ignore them).
func (p *parser) skipSeparators() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t' || p.peek() == ',') {
		p.i++
	}
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *parser) challenges() ([]Challenge, error) {
	var out []Challenge
	for {
		p.skipSeparators()
		if p.eof() {
			return out, nil
		}
		c, err := p.challenge()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// challenge parses auth-scheme [ 1*SP ( token68 / #auth-param ) ] and stops at
// the comma that starts the next challenge, or at the end.
func (p *parser) challenge() (Challenge, error) {
	scheme := p.token()
	if scheme == "" {
		return Challenge{}, p.errorf("expected an auth-scheme")
	}
	c := Challenge{Scheme: scheme}
	if p.eof() || p.peek() == ',' {
		return c, nil
	}
	if p.peek() != ' ' {
		return Challenge{}, p.errorf("expected a space after auth-scheme %q", scheme)
	}
	for !p.eof() && p.peek() == ' ' {
		p.i++
	}
	if p.eof() || p.peek() == ',' {
		return c, nil
	}
	start := p.i
	if t := p.token68(); t != "" {
		p.skipOWS()
		if p.eof() || p.peek() == ',' {
			c.Token68 = t
			return c, nil
		}
		p.i = start
	}
	c.Params = map[string]string{}
	for {
		name := p.token()
		if name == "" {
			return Challenge{}, p.errorf("expected an auth-param name")
		}
		p.skipOWS()
		if p.eof() || p.peek() != '=' {
			return Challenge{}, p.errorf("expected '=' after %q", name)
		}
		p.i++
		p.skipOWS()
		var value string
		if !p.eof() && p.peek() == '"' {
			v, err := p.quoted()
			if err != nil {
				return Challenge{}, err
			}
			value = v
		} else {
			value = p.token()
			if value == "" {
				return Challenge{}, p.errorf("expected a token or quoted-string value for %q", name)
			}
		}
		key := strings.ToLower(name)
		if _, dup := c.Params[key]; dup {
			return Challenge{}, p.errorf("parameter %q repeated", key)
		}
		c.Params[key] = value
		p.skipOWS()
		if p.eof() {
			return c, nil
		}
		if p.peek() != ',' {
			return Challenge{}, p.errorf("expected ',' after the value of %q", name)
		}
		p.skipSeparators()
		if p.eof() {
			return c, nil
		}
		// After a comma comes either another auth-param (token OWS "=") or the
		// next challenge's auth-scheme.
		save := p.i
		t := p.token()
		p.skipOWS()
		isParam := t != "" && !p.eof() && p.peek() == '='
		p.i = save
		if !isParam {
			return c, nil
		}
	}
}

// token reads a token (RFC 9110 §5.6.2) and returns "" if none starts here.
func (p *parser) token() string {
	start := p.i
	for !p.eof() && isTchar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

// token68 reads 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func (p *parser) token68() string {
	start := p.i
	for !p.eof() && isToken68Char(p.peek()) {
		p.i++
	}
	if p.i == start {
		return ""
	}
	for !p.eof() && p.peek() == '=' {
		p.i++
	}
	return p.s[start:p.i]
}

var errUnterminated = errors.New("unterminated quoted-string")

// quoted reads a quoted-string (RFC 9110 §5.6.4) and returns its unescaped value.
func (p *parser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.peek()
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\':
			p.i++
			if p.eof() {
				return "", errUnterminated
			}
			q := p.peek()
			if !(q == '\t' || q == ' ' || (q >= 0x21 && q != 0x7f)) {
				return "", p.errorf("invalid quoted-pair")
			}
			b.WriteByte(q)
			p.i++
		case c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c != 0x7f):
			b.WriteByte(c)
			p.i++
		default:
			return "", p.errorf("invalid byte 0x%02x in quoted-string", c)
		}
	}
	return "", errUnterminated
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken68Char(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", c) >= 0
}

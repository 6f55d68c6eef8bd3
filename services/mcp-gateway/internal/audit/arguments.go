package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"github.com/go-json-experiment/json/jsontext"
)

// Arguments returns params.arguments of the JSON-RPC message body, as
// canonical JSON (RFC 8785: members sorted, numbers and strings in one
// form), and the lowercase hex SHA-256 of that. Two calls with the same
// arguments, however a client spaced or ordered them, hash the same. It
// returns nil and "" when the message has no params.arguments or is not
// JSON. Arguments that cannot be canonicalized (invalid UTF-8, say) are
// returned and hashed as sent. RFC 8785 reads numbers as IEEE 754 doubles, as
// the go-sdk does: one beyond float64's range becomes ±1.7976931348623157e+308.
//
// The gateway has already parsed and validated body (package mcpreq: no
// repeated keys, case-sensitive), so the arguments read here are the ones the
// go-sdk executes.
func Arguments(body []byte) (canonical []byte, sum string) {
	raw, err := findArguments(body)
	if err != nil || raw == nil {
		return nil, ""
	}
	v := jsontext.Value(raw).Clone()
	if err := v.Canonicalize(); err != nil {
		v = jsontext.Value(raw).Clone()
	}
	h := sha256.Sum256(v)
	return v, hex.EncodeToString(h[:])
}

// findArguments returns the raw value of params.arguments in body, nil when
// absent; the slice is the decoder's, valid until it reads on.
func findArguments(body []byte) (jsontext.Value, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowInvalidUTF8(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, errors.New("not an object")
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return nil, err
		}
		if name.String() != "params" || dec.PeekKind() != '{' {
			if err := dec.SkipValue(); err != nil {
				return nil, err
			}
			continue
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		for dec.PeekKind() != '}' {
			name, err := dec.ReadToken()
			if err != nil {
				return nil, err
			}
			if name.String() == "arguments" {
				return dec.ReadValue()
			}
			if err := dec.SkipValue(); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	return nil, nil
}

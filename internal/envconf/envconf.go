// Package envconf reads a service's configuration from environment variables
// declared once, as struct tags on the service's Config type, so that the
// loader, the effective-configuration log line, `-h`, `-list-env`,
// docs/configuration.md and .env.example all come from the same declaration.
//
// Parsing is github.com/caarlos0/env/v11; this package adds what every
// binary here needs on top of it: values trimmed and an empty value treated as
// unset, one-line errors that name the variable ([Error]), shared validators
// (listen addresses, URLs, Redis URLs, scope lists), bounds on durations and
// integers, and masking of secrets when the configuration is printed.
//
// # Declaring a variable
//
// Every exported field with an `env` tag is a variable:
//
//	type Config struct {
//		Listen   string        `env:"AUTHZ_LISTEN" envDefault:":50051" check:"listen" desc:"gRPC listen address"`
//		Secret   string        `env:"REQUEST_VALIDATION_CLIENT_SECRET,required" secret:"true" desc:"..."`
//		CacheTTL time.Duration `env:"CACHE_TTL" envDefault:"60s" min:"1ms" max:"24h" desc:"..."`
//	}
//
// The tags are:
//
//   - env: the variable's name, optionally followed by ",required" (unset or
//     empty is then an error). Read by caarlos0/env.
//   - envDefault: the value used when the variable is unset or empty. Read by
//     caarlos0/env.
//   - desc: a one-line description, for -h and the generated reference. Required.
//   - defaultText: how the reference shows a default that is derived at start
//     (e.g. "{PROPELAUTH_AUTH_URL}/oauth/2.1") rather than a fixed value.
//   - secret:"true": the value is never printed, only whether it is set.
//   - check: a shared validator, see [Checks] (listen, url, baseurl, origin,
//     redisurl, scopes).
//   - min, max: bounds of a time.Duration or int variable, inclusive.
//
// Supported field types are string, []string (a list separated by commas or
// white space, duplicates dropped), bool, int, time.Duration and slog.Level.
// Rules that involve several variables (one derived from another, two that
// must be set together) stay in the service's own Load, after [Load].
package envconf

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Var describes one environment variable a binary reads.
type Var struct {
	// Name is the variable's name.
	Name string `json:"name"`
	// Default is the value used when the variable is unset, "" for none.
	Default string `json:"default,omitempty"`
	// DefaultText, when set, describes a default derived at start; docs show it
	// instead of Default.
	DefaultText string `json:"default_text,omitempty"`
	// Desc is the one-line description.
	Desc string `json:"description"`
	// Secret variables are never printed.
	Secret bool `json:"secret,omitempty"`
	// Required variables must be set.
	Required bool `json:"required,omitempty"`
	// Min and Max are the inclusive bounds of a duration or integer, "" for none.
	Min string `json:"min,omitempty"`
	Max string `json:"max,omitempty"`
}

// ShownDefault is the default as documentation shows it: DefaultText when
// set, else Default.
func (v Var) ShownDefault() string {
	if v.DefaultText != "" {
		return v.DefaultText
	}
	return v.Default
}

// Error is a configuration error about one variable.
type Error struct {
	Var string
	Msg string
}

// Error returns one line that starts with the variable's name.
func (e *Error) Error() string { return e.Var + ": " + e.Msg }

// Errorf returns an [*Error] about variable name.
func Errorf(name, format string, args ...any) error {
	return &Error{Var: name, Msg: fmt.Sprintf(format, args...)}
}

// field is a declared variable and where it lives in the struct.
type field struct {
	Var
	goName string // the Go field, as caarlos0/env names it in errors
	index  []int
	typ    reflect.Type
	check  string
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	levelType    = reflect.TypeFor[slog.Level]()
	listType     = reflect.TypeFor[[]string]()
)

// Vars returns the variables spec declares, in declaration order. spec is a
// struct or a pointer to one. It panics on a malformed declaration (a missing
// description, an unknown check, a bound on a type that has none, a name
// declared twice): that is a programming error every test of the package
// that declares it catches.
func Vars(spec any) []Var {
	fs := fields(reflect.TypeOf(spec))
	out := make([]Var, len(fs))
	for i, f := range fs {
		out[i] = f.Var
	}
	return out
}

// Names returns the names of the variables spec declares, sorted.
func Names(spec any) []string {
	var names []string
	for _, v := range Vars(spec) {
		names = append(names, v.Name)
	}
	slices.Sort(names)
	return names
}

func fields(t reflect.Type) []field {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		panic(fmt.Sprintf("envconf: %v is not a struct", t))
	}
	var out []field
	seen := map[string]bool{}
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			idx := append(slices.Clone(index), i)
			if sf.Anonymous && sf.IsExported() && sf.Type.Kind() == reflect.Struct && sf.Tag.Get("env") == "" {
				walk(sf.Type, idx)
				continue
			}
			tag, ok := sf.Tag.Lookup("env")
			if !ok || tag == "-" || !sf.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			f := field{
				Var: Var{
					Name:        name,
					Default:     sf.Tag.Get("envDefault"),
					DefaultText: sf.Tag.Get("defaultText"),
					Desc:        sf.Tag.Get("desc"),
					Secret:      sf.Tag.Get("secret") == "true",
					Required:    slices.Contains(strings.Split(opts, ","), "required"),
					Min:         sf.Tag.Get("min"),
					Max:         sf.Tag.Get("max"),
				},
				goName: sf.Name,
				index:  idx,
				typ:    sf.Type,
				check:  sf.Tag.Get("check"),
			}
			if err := f.validate(); err != nil {
				panic(fmt.Sprintf("envconf: field %s (%s): %v", sf.Name, name, err))
			}
			if seen[name] || slices.ContainsFunc(out, func(o field) bool { return o.goName == sf.Name }) {
				// caarlos0/env names a field in its errors by its Go name only.
				panic(fmt.Sprintf("envconf: %s (field %s) is declared twice", name, sf.Name))
			}
			seen[name] = true
			out = append(out, f)
		}
	}
	walk(t, nil)
	return out
}

// validate checks the declaration itself.
func (f field) validate() error {
	switch {
	case f.Name == "":
		return errors.New("empty variable name")
	case f.Desc == "":
		return errors.New("no desc tag")
	case strings.ContainsAny(f.Desc, "\n`"):
		return errors.New("desc must be one line without backquotes")
	}
	switch f.typ {
	case durationType, levelType, listType:
	default:
		switch f.typ.Kind() {
		case reflect.String, reflect.Bool, reflect.Int:
		default:
			return fmt.Errorf("unsupported type %v", f.typ)
		}
	}
	if f.Min != "" || f.Max != "" {
		if f.typ != durationType && f.typ.Kind() != reflect.Int {
			return errors.New("min and max apply to durations and integers only")
		}
		for _, b := range []string{f.Min, f.Max} {
			if b == "" {
				continue
			}
			if _, err := f.bound(b); err != nil {
				return fmt.Errorf("bound %q: %v", b, err)
			}
		}
	}
	if f.check != "" {
		c, ok := Checks[f.check]
		if !ok {
			return fmt.Errorf("unknown check %q", f.check)
		}
		if (c.String == nil && f.typ.Kind() == reflect.String) || (c.List == nil && f.typ == listType) ||
			(f.typ.Kind() != reflect.String && f.typ != listType) {
			return fmt.Errorf("check %q does not apply to %v", f.check, f.typ)
		}
	}
	if f.Default != "" {
		if _, err := parse(f.typ, f.Default); err != nil {
			return fmt.Errorf("default %q: %v", f.Default, err)
		}
	}
	return nil
}

// bound parses a min or max tag as a value of the field's type, in
// nanoseconds for a duration.
func (f field) bound(s string) (int64, error) {
	if f.typ == durationType {
		d, err := time.ParseDuration(s)
		return int64(d), err
	}
	return strconv.ParseInt(s, 10, 64)
}

// parsers turn a value into the field's type with errors that say what was
// expected; caarlos0/env calls them for the types they are keyed by.
var parsers = map[reflect.Type]env.ParserFunc{
	durationType:            func(v string) (any, error) { return parse(durationType, v) },
	reflect.TypeFor[int]():  func(v string) (any, error) { return parse(reflect.TypeFor[int](), v) },
	reflect.TypeFor[bool](): func(v string) (any, error) { return parse(reflect.TypeFor[bool](), v) },
	listType:                func(v string) (any, error) { return parse(listType, v) },
}

// parse converts v to a value of type t.
func parse(t reflect.Type, v string) (any, error) {
	switch {
	case t == durationType:
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration such as 30s or 1m", v)
		}
		return d, nil
	case t == levelType:
		var l slog.Level
		if err := l.UnmarshalText([]byte(v)); err != nil {
			return nil, fmt.Errorf("%q is not debug, info, warn or error", v)
		}
		return l, nil
	case t == listType:
		return List(v), nil
	case t.Kind() == reflect.Int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", v)
		}
		return n, nil
	case t.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", v)
		}
		return b, nil
	}
	return v, nil
}

// List splits a list separated by commas or white space, dropping empty
// items and duplicates (the first stays).
func List(v string) []string {
	var out []string
	for _, s := range strings.FieldsFunc(v, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	}) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// Load fills the variables dst declares (a pointer to a struct) from getenv
// (os.Getenv in production). Values are trimmed of white space, and an empty
// value is the same as an unset one. It returns an [*Error] naming the first
// variable, in declaration order, that is missing or invalid; the fields of
// dst are then unspecified. An embedded struct's variables count as declared
// where it is embedded; it must be an exported type.
func Load(dst any, getenv func(string) string) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("envconf.Load: %T is not a pointer to a struct", dst))
	}
	fs := fields(rv.Type())
	// A non-nil map, even empty: caarlos0/env reads the process environment
	// when Environment is nil.
	vals := make(map[string]string, len(fs))
	for _, f := range fs {
		if v := strings.TrimSpace(getenv(f.Name)); v != "" {
			vals[f.Name] = v
		}
	}
	// Only what getenv returned is seen: untagged fields are left alone by
	// caarlos0/env, and UseFieldNameByDefault stays off.
	bad := map[string]string{} // variable -> message
	if err := env.ParseWithOptions(dst, env.Options{Environment: vals, FuncMap: parsers}); err != nil {
		if err := collect(err, fs, vals, bad); err != nil {
			return err
		}
	}
	for _, f := range fs {
		if _, failed := bad[f.Name]; failed {
			continue
		}
		if _, set := vals[f.Name]; !set && f.Default == "" {
			continue
		}
		if err := f.checkValue(rv.Elem().FieldByIndex(f.index)); err != nil {
			bad[f.Name] = err.Error()
		}
	}
	for _, f := range fs {
		if msg, ok := bad[f.Name]; ok {
			return &Error{Var: f.Name, Msg: msg}
		}
	}
	return nil
}

// collect records in bad the message for each variable caarlos0/env's
// aggregate error names. It returns an error of its own only for an error
// that names no variable, which a valid declaration never causes.
func collect(err error, fs []field, vals, bad map[string]string) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("reading the environment: %w", err)
	}
	for _, e := range agg.Errors {
		var pe env.ParseError
		var ns env.VarIsNotSetError
		switch {
		case errors.As(e, &pe):
			// caarlos0/env names the Go field; the message is ours, also
			// for types it parses itself (slog.Level's UnmarshalText).
			i := slices.IndexFunc(fs, func(f field) bool { return f.goName == pe.Name })
			if i < 0 {
				return fmt.Errorf("reading the environment: %w", err)
			}
			msg := pe.Err.Error()
			if _, perr := parse(fs[i].typ, vals[fs[i].Name]); perr != nil {
				msg = perr.Error()
			}
			bad[fs[i].Name] = msg
		case errors.As(e, &ns):
			bad[ns.Key] = "required but not set"
		default:
			return fmt.Errorf("reading the environment: %w", err)
		}
	}
	return nil
}

// checkValue applies the field's bounds and check to its parsed value,
// normalising it in place where the check does.
func (f field) checkValue(v reflect.Value) error {
	if f.Min != "" || f.Max != "" {
		var n int64
		var show func(int64) string
		if f.typ == durationType {
			n, show = v.Int(), func(x int64) string { return time.Duration(x).String() }
		} else {
			n, show = v.Int(), func(x int64) string { return strconv.FormatInt(x, 10) }
		}
		lo, hi := int64(-1<<63), int64(1<<63-1)
		if f.Min != "" {
			lo, _ = f.bound(f.Min)
		}
		if f.Max != "" {
			hi, _ = f.bound(f.Max)
		}
		if n < lo || n > hi {
			return fmt.Errorf("%s is out of range [%s, %s]", show(n), cmpOr(f.Min, "-"), cmpOr(f.Max, "-"))
		}
	}
	if f.check == "" {
		return nil
	}
	c := Checks[f.check]
	if f.typ == listType {
		out, err := c.List(v.Interface().([]string))
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(out))
		return nil
	}
	out, err := c.String(v.String())
	if err != nil {
		return err
	}
	v.SetString(out)
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Logging declares LOG_LEVEL, which every binary reads; a service's Config
// embeds it.
type Logging struct {
	LogLevel slog.Level `env:"LOG_LEVEL" envDefault:"info" desc:"minimum level logged: debug, info, warn or error"`
}

// Level returns the minimum level to log.
func (l Logging) Level() slog.Level { return l.LogLevel }

package introspect

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// AppendClaimsJSON appends the claims as a JSON object to dst: the members and
// values Claims would return, in ClaimsWire's order (sorted by name), numbers
// formatted as encoding/json formats a float64. It reads ClaimsWire directly,
// without decoding a Struct, so serving a caller that wants JSON costs a walk over
// a few hundred bytes rather than a Struct's allocations. A Result without claims
// appends nothing. The error is non-nil only if ClaimsWire was corrupted, which
// Parse never produces.
func (r *Result) AppendClaimsJSON(dst []byte) ([]byte, error) {
	if len(r.ClaimsWire) == 0 {
		return dst, nil
	}
	out, err := appendStruct(dst, r.ClaimsWire, 0)
	if err != nil {
		return dst, fmt.Errorf("encoding claims as JSON: %w", err)
	}
	return out, nil
}

// maxDepth bounds nesting, as protobuf's own decoder does (its default is 10000;
// an introspection response nests a handful of levels at most).
const maxDepth = 100

var errCorrupt = errors.New("corrupt Struct encoding")

// Field numbers of google.protobuf.Struct, its map entry, Value and ListValue.
const (
	structFields = 1 // Struct.fields: repeated entry
	entryKey     = 1
	entryValue   = 2
	valueNull    = 1
	valueNumber  = 2
	valueString  = 3
	valueBool    = 4
	valueStruct  = 5
	valueList    = 6
	listValues   = 1
)

// appendStruct appends the google.protobuf.Struct encoded in b as a JSON object.
func appendStruct(dst, b []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errCorrupt
	}
	dst = append(dst, '{')
	fields := bytesFields{b: b, num: structFields}
	for i := 0; ; i++ {
		entry, ok, err := fields.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		var key, value []byte
		for len(entry) > 0 {
			num, typ, n := protowire.ConsumeTag(entry)
			if n < 0 {
				return nil, errCorrupt
			}
			entry = entry[n:]
			switch {
			case num == entryKey && typ == protowire.BytesType:
				key, n = protowire.ConsumeBytes(entry)
			case num == entryValue && typ == protowire.BytesType:
				value, n = protowire.ConsumeBytes(entry)
			default:
				n = protowire.ConsumeFieldValue(num, typ, entry)
			}
			if n < 0 {
				return nil, errCorrupt
			}
			entry = entry[n:]
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, key)
		dst = append(dst, ':')
		if dst, err = appendValue(dst, value, depth+1); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// bytesFields iterates over the length-delimited fields numbered num of an
// encoded message, skipping every other field.
type bytesFields struct {
	b   []byte
	num protowire.Number
}

// next returns the next such field's bytes; ok is false at the end.
func (f *bytesFields) next() (v []byte, ok bool, err error) {
	for len(f.b) > 0 {
		num, typ, n := protowire.ConsumeTag(f.b)
		if n < 0 {
			return nil, false, errCorrupt
		}
		f.b = f.b[n:]
		if num != f.num || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, f.b); n < 0 {
				return nil, false, errCorrupt
			}
			f.b = f.b[n:]
			continue
		}
		if v, n = protowire.ConsumeBytes(f.b); n < 0 {
			return nil, false, errCorrupt
		}
		f.b = f.b[n:]
		return v, true, nil
	}
	return nil, false, nil
}

// appendValue appends the google.protobuf.Value encoded in b. A Value with no
// kind set (which Parse never produces) is null, as protojson writes it.
func appendValue(dst, b []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errCorrupt
	}
	// The last kind on the wire wins, as in protobuf's decoding of a oneof.
	kind, kindType := protowire.Number(0), protowire.Type(0)
	var kindData []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errCorrupt
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, errCorrupt
		}
		if num >= valueNull && num <= valueList {
			kind, kindType, kindData = num, typ, b[n:n+m]
		}
		b = b[n+m:]
	}
	switch {
	case kind == 0 || kind == valueNull && kindType == protowire.VarintType:
		return append(dst, "null"...), nil
	case kind == valueNumber && kindType == protowire.Fixed64Type:
		v, _ := protowire.ConsumeFixed64(kindData)
		return appendFloat(dst, math.Float64frombits(v))
	case kind == valueString && kindType == protowire.BytesType:
		s, _ := protowire.ConsumeBytes(kindData)
		return appendString(dst, s), nil
	case kind == valueBool && kindType == protowire.VarintType:
		v, _ := protowire.ConsumeVarint(kindData)
		if v != 0 {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case kind == valueStruct && kindType == protowire.BytesType:
		s, _ := protowire.ConsumeBytes(kindData)
		return appendStruct(dst, s, depth+1)
	case kind == valueList && kindType == protowire.BytesType:
		l, _ := protowire.ConsumeBytes(kindData)
		return appendList(dst, l, depth+1)
	}
	return nil, errCorrupt
}

// appendList appends the google.protobuf.ListValue encoded in b as a JSON array.
func appendList(dst, b []byte, depth int) ([]byte, error) {
	dst = append(dst, '[')
	values := bytesFields{b: b, num: listValues}
	for i := 0; ; i++ {
		v, ok, err := values.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = appendValue(dst, v, depth); err != nil {
			return nil, err
		}
	}
	return append(dst, ']'), nil
}

// appendFloat formats f as encoding/json formats a float64 (ES6 number
// formatting). JSON has no NaN or infinity; Parse never stores one.
func appendFloat(dst []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, errCorrupt
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst, nil
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, U+2028 and U+2029 too (so the output is safe to embed in
// JavaScript), and invalid UTF-8 replaced by U+FFFD.
func appendString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

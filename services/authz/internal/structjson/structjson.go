// Package structjson writes a google.protobuf.Struct, given in its wire encoding,
// as a JSON object, without decoding it into a Struct first.
//
// authz keeps every cached introspection response's members as Struct wire
// bytes and answers CLAIMS_FORMAT_JSON from them: walking a few hundred bytes
// costs far less than decoding a Struct (a map of Value messages) and encoding
// it again. The JSON text itself (escaping, number formatting, punctuation) is
// written by github.com/go-json-experiment/json/jsontext, the encoder of
// encoding/json/v2; this package only walks the protobuf encoding.
//
// The output holds the values protojson would write for the same Struct: members
// in wire order (which a deterministic marshal sorts by name), numbers as the
// shortest JSON number of the same float64 (ECMAScript formatting, as
// encoding/json writes them), and U+2028 and U+2029 escaped as well as what
// JSON requires, so the text is safe to embed in JavaScript.
package structjson

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/protobuf/encoding/protowire"
)

// ErrCorrupt is returned (wrapped) by [Append] for bytes that are not the wire
// encoding of a Struct that JSON can represent: malformed protobuf, nesting
// deeper than [MaxDepth], a number that is NaN or infinite, or a string that is
// not UTF-8 (which protobuf would refuse to decode, too).
var ErrCorrupt = errors.New("corrupt Struct encoding")

// MaxDepth bounds nesting, as protobuf's own decoder does (its default is
// 10000; an introspection response nests a handful of levels at most).
const MaxDepth = 100

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

// Append appends the google.protobuf.Struct whose wire encoding is wire to dst as
// a JSON object and returns the extended buffer. Empty wire bytes are the empty
// Struct, {}. If wire is not a valid encoding, the error unwraps to [ErrCorrupt]
// and dst is returned as it was. Append allocates only when dst has too little
// capacity.
func Append(dst, wire []byte) ([]byte, error) {
	w := writers.Get().(*writer)
	defer w.release()
	w.out = dst
	w.enc.Reset(w, options...)
	if err := w.object(wire, 0); err != nil {
		return dst, fmt.Errorf("encoding Struct as JSON: %w", err)
	}
	// A streaming encoder ends every top-level value with a newline.
	return w.out[:len(w.out)-1], nil
}

// options: the names of a Struct are a map's keys, so checking them for
// duplicates would cost time for nothing; escaping for JavaScript keeps the
// output embeddable in a script, as encoding/json's is.
var options = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.EscapeForJS(true)}

// A writer is a pooled encoder and the io.Writer it flushes to, which appends
// to the caller's buffer. (The encoder could append into a bytes.Buffer made of
// that buffer directly, saving one copy of the output, but it grows such a
// buffer whenever less than a quarter is left free, allocating for nothing.)
type writer struct {
	enc jsontext.Encoder
	out []byte
}

var writers = sync.Pool{New: func() any { return new(writer) }}

// Write appends p to the output; the encoder calls it when it flushes.
func (w *writer) Write(p []byte) (int, error) {
	w.out = append(w.out, p...)
	return len(p), nil
}

func (w *writer) release() {
	w.out = nil // the pool must not keep the caller's memory alive
	writers.Put(w)
}

// object writes the Struct encoded in b.
func (w *writer) object(b []byte, depth int) error {
	if depth > MaxDepth {
		return ErrCorrupt
	}
	if err := w.enc.WriteToken(jsontext.BeginObject); err != nil {
		return err
	}
	entries := bytesFields{b: b, num: structFields}
	for {
		entry, ok, err := entries.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		var key, value []byte
		for len(entry) > 0 {
			num, typ, n := protowire.ConsumeTag(entry)
			if n < 0 {
				return ErrCorrupt
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
				return ErrCorrupt
			}
			entry = entry[n:]
		}
		if err := w.string(key); err != nil {
			return err
		}
		if err := w.value(value, depth+1); err != nil {
			return err
		}
	}
	return w.enc.WriteToken(jsontext.EndObject)
}

// value writes the google.protobuf.Value encoded in b. A Value with no kind set
// is null, as protojson writes it.
func (w *writer) value(b []byte, depth int) error {
	if depth > MaxDepth {
		return ErrCorrupt
	}
	// The last kind on the wire wins, as in protobuf's decoding of a oneof.
	kind, kindType := protowire.Number(0), protowire.Type(0)
	var kindData []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrCorrupt
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return ErrCorrupt
		}
		if num >= valueNull && num <= valueList {
			kind, kindType, kindData = num, typ, b[n:n+m]
		}
		b = b[n+m:]
	}
	switch {
	case kind == 0 || kind == valueNull && kindType == protowire.VarintType:
		return w.enc.WriteToken(jsontext.Null)
	case kind == valueNumber && kindType == protowire.Fixed64Type:
		v, _ := protowire.ConsumeFixed64(kindData)
		f := math.Float64frombits(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			// jsontext would write a string; JSON has no such number.
			return ErrCorrupt
		}
		return w.enc.WriteToken(jsontext.Float(f))
	case kind == valueString && kindType == protowire.BytesType:
		s, _ := protowire.ConsumeBytes(kindData)
		return w.string(s)
	case kind == valueBool && kindType == protowire.VarintType:
		v, _ := protowire.ConsumeVarint(kindData)
		return w.enc.WriteToken(jsontext.Bool(v != 0))
	case kind == valueStruct && kindType == protowire.BytesType:
		s, _ := protowire.ConsumeBytes(kindData)
		return w.object(s, depth+1)
	case kind == valueList && kindType == protowire.BytesType:
		l, _ := protowire.ConsumeBytes(kindData)
		return w.list(l, depth+1)
	}
	return ErrCorrupt
}

// list writes the google.protobuf.ListValue encoded in b as a JSON array.
func (w *writer) list(b []byte, depth int) error {
	if err := w.enc.WriteToken(jsontext.BeginArray); err != nil {
		return err
	}
	values := bytesFields{b: b, num: listValues}
	for {
		v, ok, err := values.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := w.value(v, depth); err != nil {
			return err
		}
	}
	return w.enc.WriteToken(jsontext.EndArray)
}

// string writes s, a name or a string value, as a JSON string. The token only
// borrows s: WriteToken copies it into the output before returning, and the
// wire bytes are not modified meanwhile, so no copy is made to build it.
func (w *writer) string(s []byte) error {
	if err := w.enc.WriteToken(jsontext.String(unsafe.String(unsafe.SliceData(s), len(s)))); err != nil {
		// Invalid UTF-8 is the only way a string token can fail.
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
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
			return nil, false, ErrCorrupt
		}
		f.b = f.b[n:]
		if num != f.num || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, f.b); n < 0 {
				return nil, false, ErrCorrupt
			}
			f.b = f.b[n:]
			continue
		}
		if v, n = protowire.ConsumeBytes(f.b); n < 0 {
			return nil, false, ErrCorrupt
		}
		f.b = f.b[n:]
		return v, true, nil
	}
	return nil, false, nil
}

package rawjson

import (
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

// TestReaderInPlace: a value read is a slice of the text itself (no copy),
// still valid after the reader is released, and a released reader keeps no
// reference to the text.
func TestReaderInPlace(t *testing.T) {
	text := []byte(`{"a":{"b":[1,2]},"c":"d"}`)
	r := NewReader(text)
	if _, err := r.ReadToken(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadToken(); err != nil {
		t.Fatal(err)
	}
	v, err := r.ReadValue()
	if err != nil {
		t.Fatal(err)
	}
	if string(v) != `{"b":[1,2]}` || &v[0] != &text[5] {
		t.Errorf("value %s at %p, want a slice of the text at %p", v, &v[0], &text[5])
	}
	if got := r.Source(); &got[0] != &text[0] {
		t.Error("Source is not the text")
	}
	r.Release()
	if r.Source() != nil {
		t.Error("a released reader still holds the text")
	}
	if string(v) != `{"b":[1,2]}` {
		t.Errorf("value after release %s", v)
	}
}

// TestReaderOptions: Open applies the options it is given, and a reused
// reader forgets the previous text's.
func TestReaderOptions(t *testing.T) {
	bad := []byte("\"\xff\"")
	var r Reader
	r.Open(bad, jsontext.AllowInvalidUTF8(true))
	if _, err := r.ReadValue(); err != nil {
		t.Errorf("with AllowInvalidUTF8: %v", err)
	}
	r.Close()
	r.Open(bad)
	if _, err := r.ReadValue(); err == nil {
		t.Error("without options, invalid UTF-8 read")
	}
	r.Open([]byte(`{"a":1,"a":2}`))
	if _, err := r.ReadValue(); err == nil {
		t.Error("a repeated name read")
	}
}

// TestBuffers: a buffer comes back empty; one grown past the bound is not
// kept, so the pool never holds large buffers.
func TestBuffers(t *testing.T) {
	b := GetBuffer()
	if len(*b) != 0 || cap(*b) < 4096 {
		t.Fatalf("len %d cap %d", len(*b), cap(*b))
	}
	*b = append(*b, "x"...)
	PutBuffer(b)
	if len(*b) != 0 {
		t.Error("a returned buffer is not emptied")
	}
	big := make([]byte, 10, maxPooledBuffer+1)
	PutBuffer(&big)
	if len(big) != 10 {
		t.Error("a buffer past the bound was emptied for the pool")
	}
}

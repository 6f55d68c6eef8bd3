// Package rawjson holds what the gateway's hot path shares for reading and
// writing JSON messages as bytes: a reader that parses a message in place
// (package mcpreq reads every request body with it, package upstream every
// answer, package federation the requests it routes) and pooled byte
// buffers for the answers assembled or read meanwhile.
//
// A jsontext.Decoder reset over a bytes.Buffer reads the buffer's bytes
// without copying them, so a value it returns is a slice of the message
// itself, valid as long as the message is, and a pooled decoder keeps the
// stacks it grew for the next message.
package rawjson

import (
	"bytes"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// Reader reads one JSON text in place. Its zero value reads nothing until
// [Reader.Open]; [NewReader] gives a pooled one.
type Reader struct {
	jsontext.Decoder
	in  bytes.Buffer
	src []byte
}

// Open makes r read b from its start with opts.
func (r *Reader) Open(b []byte, opts ...jsontext.Options) {
	r.src = b
	r.in = *bytes.NewBuffer(b)
	r.Reset(&r.in, opts...)
}

// Close lets go of the text, so that a reader kept for reuse does not keep
// it alive. Values read from it stay valid.
func (r *Reader) Close() {
	r.src = nil
	r.in = bytes.Buffer{}
	r.Reset(&r.in)
}

// Source returns the text r reads (nil after Close).
func (r *Reader) Source() []byte { return r.src }

var readers = sync.Pool{New: func() any { return new(Reader) }}

// NewReader returns a pooled reader of b; release it when done with it. Pass
// options as a slice held in a variable (opts...), which costs no
// allocation.
func NewReader(b []byte, opts ...jsontext.Options) *Reader {
	r := readers.Get().(*Reader)
	r.Open(b, opts...)
	return r
}

// Release closes r and returns it to the pool.
func (r *Reader) Release() {
	r.Close()
	readers.Put(r)
}

// maxPooledBuffer bounds what the pool keeps: a buffer that grew past it (a
// large message) is left to the collector.
const maxPooledBuffer = 64 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// GetBuffer returns an empty pooled buffer of at least 4 KiB.
func GetBuffer() *[]byte { return buffers.Get().(*[]byte) }

// PutBuffer returns b to the pool, emptied. Nothing may use its bytes after:
// copy out what outlives it (an http.ResponseWriter copies what it is given).
func PutBuffer(b *[]byte) {
	if cap(*b) > maxPooledBuffer {
		return
	}
	*b = (*b)[:0]
	buffers.Put(b)
}

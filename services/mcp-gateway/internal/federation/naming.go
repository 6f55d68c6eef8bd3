package federation

import (
	"crypto/sha256"
	"encoding/hex"
)

// MaxNameLen is the longest tool or prompt name the gateway shows.
const MaxNameLen = 64

// shortLen is how much of a name too long is kept, before "_" and 8 hex
// digits of its hash: 55 + 1 + 8 = 64.
const shortLen = MaxNameLen - 9

// ExposedName returns the name the gateway shows for an upstream's tool or
// prompt called name, under prefix: prefix+name, with every character other
// than ASCII letters, digits, '_', '-' and '.' replaced by '_', and, when
// longer than [MaxNameLen], cut to its first 55 characters followed by '_'
// and the first 8 hex digits of the SHA-256 of the whole (unreplaced) name.
// The same input always gives the same name, on every replica.
func ExposedName(prefix, name string) string {
	full := prefix + name
	b := make([]byte, 0, len(full))
	for i := 0; i < len(full); i++ {
		c := full[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' {
			b = append(b, c)
		} else {
			b = append(b, '_')
		}
	}
	if len(b) <= MaxNameLen && len(b) > 0 {
		return string(b)
	}
	if len(b) == 0 {
		// An empty name under an empty prefix: never a valid name, and
		// left out by the catalog; this keeps the function total.
		return ""
	}
	sum := sha256.Sum256([]byte(full))
	return string(b[:shortLen]) + "_" + hex.EncodeToString(sum[:4])
}

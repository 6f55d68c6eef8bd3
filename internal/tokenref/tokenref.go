// Package tokenref is how every service names a token in its logs, so that an
// operator can follow one token across the gateway and authz without any log
// ever holding the token.
//
// authz names each token by its token_ref: the lowercase hex SHA-256 cache key
// it derives from the introspection endpoint and the token, which it returns in
// every AuthorizeResponse and streams to WatchInvalidations. Logs carry the
// first [LogLen] hex digits of it under the key [Key], whichever service
// writes them. A service that never got a token_ref for a token (authz could
// not be asked) logs no reference.
package tokenref

import "log/slog"

// Key is the log attribute that names a token.
const Key = "token_ref"

// LogLen is how many hex digits of a token_ref logs carry: 48 bits, plenty to
// tell the tokens of one incident apart, too few to be a cache key.
const LogLen = 12

// Short returns the part of a token_ref that logs carry; ref itself when it is
// shorter.
func Short(ref string) string {
	if len(ref) > LogLen {
		return ref[:LogLen]
	}
	return ref
}

// Attr is the log attribute naming the token whose token_ref is ref.
func Attr(ref string) slog.Attr { return slog.String(Key, Short(ref)) }

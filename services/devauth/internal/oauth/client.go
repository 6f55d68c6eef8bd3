package oauth

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

// errUnknownClient means the client_id is neither registered nor a usable
// Client ID Metadata Document URL.
var errUnknownClient = errors.New("unknown client")

// client resolves a client_id: a URL is a Client ID Metadata Document,
// anything else must have been registered through DCR. On failure it returns
// an error whose text is safe to show to the user.
func (s *Server) client(ctx context.Context, id string) (store.Client, error) {
	if id == "" {
		return store.Client{}, errors.New("client_id is required")
	}
	if looksLikeURL(id) {
		return s.cimd.resolve(ctx, id)
	}
	c, err := s.opts.Store.Client(id)
	if err != nil {
		return store.Client{}, errUnknownClient
	}
	return c, nil
}

func looksLikeURL(id string) bool {
	return strings.HasPrefix(id, "https://") || strings.HasPrefix(id, "http://")
}

// redirectRegistered reports whether requested matches one of the client's
// registered redirect URIs.
func redirectRegistered(c store.Client, requested string) bool {
	return slices.ContainsFunc(c.RedirectURIs, func(r string) bool { return redirectMatches(r, requested) })
}

func allowsGrant(c store.Client, grant string) bool {
	return len(c.GrantTypes) == 0 || slices.Contains(c.GrantTypes, grant)
}

func displayName(c store.Client) string {
	if c.Name != "" {
		return c.Name
	}
	return c.ID
}

package healthprobe

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name    string
		url     string
		wantErr bool
	}{
		{"200", srv.URL + "/ok", false},
		{"503", srv.URL + "/down", true},
		{"404", srv.URL + "/missing", true},
		{"connection refused", closed.URL + "/ok", true},
		{"not a URL", "::", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := Probe(t.Context(), tt.url); (err != nil) != tt.wantErr {
				t.Errorf("Probe(%q) = %v, want error %v", tt.url, err, tt.wantErr)
			}
		})
	}
}

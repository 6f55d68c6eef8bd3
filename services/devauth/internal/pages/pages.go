// Package pages renders devauth's HTML: the login form, the consent page and
// the error page shown when /authorize cannot safely redirect back to the
// client. Templates are embedded (html/template escapes every value, so a
// client name or scope cannot inject markup).
package pages

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
)

//go:embed templates/*.html
var files embed.FS

var tmpl = template.Must(template.ParseFS(files, "templates/*.html"))

// Scope is one requested scope with a human description.
type Scope struct {
	Name        string
	Description string
}

// Login is the data of the sign-in page.
type Login struct {
	Action     string // form target
	ClientName string
	Resource   string
	RequestID  string
	CSRF       string
	Email      string
	Error      string
	Hint       string
}

// Consent is the data of the consent page.
type Consent struct {
	Action      string
	ClientName  string
	ClientID    string
	RedirectURI string
	Resource    string
	Scopes      []Scope
	UserEmail   string
	RequestID   string
	CSRF        string
}

// Error is the data of the error page.
type Error struct {
	Title   string
	Message string
}

// RenderLogin writes the sign-in page with the given status.
func RenderLogin(w http.ResponseWriter, status int, d Login) { render(w, status, "login.html", d) }

// RenderConsent writes the consent page with status 200.
func RenderConsent(w http.ResponseWriter, d Consent) { render(w, http.StatusOK, "consent.html", d) }

// RenderError writes the error page with the given status.
func RenderError(w http.ResponseWriter, status int, d Error) { render(w, status, "error.html", d) }

func render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		// Only a template bug gets here; the page tests render every template.
		http.Error(w, "internal error rendering page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// No framing (clickjacking the Approve button) and no scripts at all.
	// form-action is deliberately absent: browsers apply it to the redirect
	// that follows the consent POST, which goes to the client's origin.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

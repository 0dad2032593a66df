package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"

	"github.com/labstack/echo/v4"
)

// CSRF protection has two layers.
//
//  1. CrossOriginGuard refuses every unsafe request (POST, PUT, ...) that a
//     browser marks as coming from another origin: Sec-Fetch-Site other
//     than same-origin or none, or else an Origin header whose host is not
//     ours (net/http's CrossOriginProtection). It covers the JSON API too:
//     basic-auth credentials are ambient in a browser, so a page elsewhere
//     could otherwise POST /api/v1/executions/{id}/retry with them. Clients
//     such as curl send neither header and pass; a bearer token is never
//     ambient.
//  2. Every UI form also carries a per-browser token (double submit): a
//     random value in a SameSite=Strict, HttpOnly cookie that the page also
//     writes into a hidden field; a POST must bring both, equal, compared in
//     constant time. This holds for browsers too old to send Sec-Fetch-Site
//     or Origin. Under HTTPS the cookie is named __Host-..., so a sibling
//     subdomain cannot plant its own value.

// csrfField is the hidden form field that carries the token.
const csrfField = "csrf"

// CrossOriginGuard is echo middleware that refuses unsafe cross-origin
// browser requests with 403. Safe methods always pass.
func CrossOriginGuard() echo.MiddlewareFunc {
	cop := http.NewCrossOriginProtection()
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := cop.Check(c.Request()); err != nil {
				return echo.NewHTTPError(http.StatusForbidden, "cross-origin request refused")
			}
			return next(c)
		}
	}
}

func csrfCookieName(c echo.Context) string {
	if isHTTPS(c) {
		return "__Host-alorules_csrf"
	}
	return "alorules_csrf"
}

// csrfToken returns this browser's token, setting the cookie if it has
// none yet (first visit, or the cookie was cleared).
func csrfToken(c echo.Context) string {
	name := csrfCookieName(c)
	if ck, err := c.Cookie(name); err == nil && validToken(ck.Value) {
		return ck.Value
	}
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics rather than return an error)
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	c.SetCookie(&http.Cookie{Name: name, Value: tok, Path: "/", HttpOnly: true, Secure: isHTTPS(c),
		SameSite: http.SameSiteStrictMode})
	// Later calls in this request (the page renders the token once per
	// form) must see the same value.
	c.Request().AddCookie(&http.Cookie{Name: name, Value: tok})
	return tok
}

func validToken(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// maxFormBody caps a form POST; the playground's candidate rules are the
// largest thing a form carries.
const maxFormBody = 2 << 20

// csrf guards a form POST: same origin, and the hidden field equal to the
// cookie.
func (a *Admin) csrf(h echo.HandlerFunc) echo.HandlerFunc {
	cop := http.NewCrossOriginProtection()
	return func(c echo.Context) error {
		req := c.Request()
		refuse := echo.NewHTTPError(http.StatusForbidden,
			"This form has expired or did not come from this site. Go back, reload the page and try again.")
		if cop.Check(req) != nil {
			return refuse
		}
		req.Body = http.MaxBytesReader(c.Response(), req.Body, maxFormBody)
		ck, err := c.Cookie(csrfCookieName(c))
		if err != nil || !validToken(ck.Value) {
			return refuse
		}
		if subtle.ConstantTimeCompare([]byte(ck.Value), []byte(c.FormValue(csrfField))) != 1 {
			return refuse
		}
		return h(c)
	}
}

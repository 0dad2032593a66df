package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/bcrypt"

	"alorules"
)

// Auth guards the admin listener: HTTP basic auth checked against a bcrypt
// hash, or a bearer token, or both. The zero value allows everyone, which
// is only accepted on a loopback address.
type Auth struct {
	User         string
	PasswordHash []byte // bcrypt
	Token        alorules.Secret

	// bcrypt is slow by design; a browser sends the same credentials with
	// every request, so remember the digests of the ones already verified.
	mu   sync.Mutex
	good map[[32]byte]bool
}

// Enabled reports whether any credential is configured.
func (a *Auth) Enabled() bool {
	return len(a.PasswordHash) > 0 || a.Token != ""
}

// openPaths answer without credentials: probes cannot log in, and they
// reveal nothing.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true}

func (a *Auth) middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !a.Enabled() || openPaths[c.Request().URL.Path] {
				return next(c)
			}
			if a.allows(c.Request()) {
				return next(c)
			}
			if len(a.PasswordHash) > 0 {
				c.Response().Header().Set("WWW-Authenticate", `Basic realm="alorules", charset="UTF-8"`)
			}
			return echo.NewHTTPError(http.StatusUnauthorized, "authentication required")
		}
	}
}

func (a *Auth) allows(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok && a.Token != "" {
		return subtle.ConstantTimeCompare([]byte(tok), []byte(a.Token.Reveal())) == 1
	}
	user, pass, ok := r.BasicAuth()
	if !ok || len(a.PasswordHash) == 0 {
		return false
	}
	if subtle.ConstantTimeCompare([]byte(user), []byte(a.User)) != 1 {
		return false
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	a.mu.Lock()
	known := a.good[key]
	a.mu.Unlock()
	if known {
		return true
	}
	if bcrypt.CompareHashAndPassword(a.PasswordHash, []byte(pass)) != nil {
		return false
	}
	a.mu.Lock()
	if a.good == nil || len(a.good) > 64 {
		a.good = map[[32]byte]bool{}
	}
	a.good[key] = true
	a.mu.Unlock()
	return true
}

// checkAdminExposure refuses to serve the admin listener beyond loopback
// without credentials: the UI shows payloads and can replay events.
func checkAdminExposure(addr string, a *Auth) error {
	if a.Enabled() {
		if len(a.PasswordHash) > 0 && a.User == "" {
			return errors.New("admin basic auth needs a user name (ALORULES_ADMIN_USER)")
		}
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("admin listener %q is reachable beyond loopback but no admin auth is configured: "+
		"set ALORULES_ADMIN_PASSWORD_HASH (bcrypt, with ALORULES_ADMIN_USER) or ALORULES_ADMIN_TOKEN, "+
		"or bind it to 127.0.0.1", addr)
}

package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"

	"github.com/labstack/echo/v4"
)

//go:embed static
var staticFS embed.FS

// staticFile is one embedded asset with its content hash.
type staticFile struct {
	body  []byte
	ctype string
	hash  string
}

// staticFiles are read once at start; the hash goes into every page's
// asset URLs (?v=), so an asset can be cached for a year and a new build
// is still fetched at once.
var staticFiles = loadStatic()

// assetURLs are the versioned URLs the layout links to.
type assetURLs struct {
	CSS, JS, Icon string
}

var assets = assetURLs{
	CSS:  staticURL("style.css"),
	JS:   staticURL("app.js"),
	Icon: staticURL("favicon.svg"),
}

func loadStatic() map[string]staticFile {
	out := map[string]staticFile{}
	entries, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		panic(err) // embedded: cannot fail at run time if it built
	}
	for _, e := range entries {
		body, err := fs.ReadFile(staticFS, "static/"+e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(body)
		ctype := mime.TypeByExtension(path.Ext(e.Name()))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		out[e.Name()] = staticFile{body: body, ctype: ctype, hash: hex.EncodeToString(sum[:8])}
	}
	return out
}

func staticURL(name string) string {
	f, ok := staticFiles[name]
	if !ok {
		panic("web: no static file " + name)
	}
	return "/static/" + name + "?v=" + f.hash
}

// serveStatic serves an embedded asset. With the current version in the
// query it may be cached for good; otherwise the browser revalidates.
func serveStatic(c echo.Context) error {
	f, ok := staticFiles[c.Param("name")]
	if !ok {
		return echo.NewHTTPError(http.StatusNotFound, "no such file")
	}
	h := c.Response().Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'")
	etag := `"` + f.hash + `"`
	h.Set("ETag", etag)
	if c.QueryParam("v") == f.hash {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if c.Request().Header.Get("If-None-Match") == etag {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, f.ctype, f.body)
}

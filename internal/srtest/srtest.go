// Package srtest is a Confluent-compatible schema registry for tests:
// franz-go's srfake (the REST API, ids, subjects, versions) with what it
// leaves out, Avro compatibility rules. Registering a schema that breaks
// the subject's compatibility level gets 409, as from a real registry;
// compatibility checks answer for real (hamba/avro's schema resolution).
package srtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// Registry is a running test registry.
type Registry struct {
	*srfake.Registry
	mu     sync.Mutex
	levels map[string]sr.CompatibilityLevel // per subject; "" key: global
	down   atomic.Bool
	auth   atomic.Pointer[[2]string] // user, password; nil: no auth
	// Requests counts requests (to check caching).
	Requests atomic.Int64
}

// New starts a registry on loopback (BACKWARD by default, as Confluent's).
func New() *Registry {
	r := &Registry{Registry: srfake.New(), levels: map[string]sr.CompatibilityLevel{"": sr.CompatBackward}}
	r.Intercept(r.intercept)
	return r
}

// SetLevel sets a subject's compatibility level ("" for the global one).
func (r *Registry) SetLevel(subject string, level sr.CompatibilityLevel) {
	r.mu.Lock()
	r.levels[subject] = level
	r.mu.Unlock()
	if subject != "" {
		r.Registry.SetCompat(subject, level)
	}
}

// Down makes every request fail with 503 until Up.
func (r *Registry) Down() { r.down.Store(true) }

// Up ends Down.
func (r *Registry) Up() { r.down.Store(false) }

// RequireAuth makes every request without these basic-auth credentials
// fail with 401. The answer echoes the Authorization header it got, as
// careless proxies and registries do, so tests can check that clients
// keep such answers out of their logs.
func (r *Registry) RequireAuth(user, password string) { r.auth.Store(&[2]string{user, password}) }

func (r *Registry) level(subject string) sr.CompatibilityLevel {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.levels[subject]; ok {
		return l
	}
	return r.levels[""]
}

// versions returns the schemas of a subject, oldest first (versions are
// dense: tests delete none).
func (r *Registry) versions(subject string) []sr.SubjectSchema {
	var out []sr.SubjectSchema
	for v := 1; ; v++ {
		s, ok := r.GetSchema(subject, v)
		if !ok {
			return out
		}
		out = append(out, s)
	}
}

// check tests candidate against the subject's schemas under its level.
func (r *Registry) check(subject string, candidate sr.Schema, against []sr.SubjectSchema) error {
	if candidate.Type != sr.TypeAvro && candidate.Type != 0 {
		return nil
	}
	newSchema, err := avro.Parse(candidate.Schema)
	if err != nil {
		return fmt.Errorf("invalid schema: %v", err)
	}
	level := r.level(subject)
	if level == sr.CompatNone || len(against) == 0 {
		return nil
	}
	transitive := strings.HasSuffix(level.String(), "_TRANSITIVE")
	if !transitive {
		against = against[len(against)-1:]
	}
	compat := avro.NewSchemaCompatibility()
	for _, old := range against {
		oldSchema, err := avro.Parse(old.Schema.Schema)
		if err != nil {
			return err
		}
		switch level {
		case sr.CompatBackward, sr.CompatBackwardTransitive:
			err = compat.Compatible(newSchema, oldSchema)
		case sr.CompatForward, sr.CompatForwardTransitive:
			err = compat.Compatible(oldSchema, newSchema)
		case sr.CompatFull, sr.CompatFullTransitive:
			if err = compat.Compatible(newSchema, oldSchema); err == nil {
				err = compat.Compatible(oldSchema, newSchema)
			}
		}
		if err != nil {
			return fmt.Errorf("schema is incompatible with version %d under %s: %v", old.Version, level, err)
		}
	}
	return nil
}

func (r *Registry) intercept(w http.ResponseWriter, req *http.Request) bool {
	r.Requests.Add(1)
	if r.down.Load() {
		writeErr(w, http.StatusServiceUnavailable, 50003, "registry unavailable")
		return true
	}
	if a := r.auth.Load(); a != nil {
		if u, p, ok := req.BasicAuth(); !ok || u != a[0] || p != a[1] {
			writeErr(w, http.StatusUnauthorized, 401, fmt.Sprintf("Unauthorized: credentials %q rejected for %s", req.Header.Get("Authorization"), req.URL))
			return true
		}
	}
	path := strings.TrimPrefix(req.URL.Path, "/")
	parts := strings.Split(path, "/")
	switch {
	case req.Method == http.MethodPost && len(parts) == 3 && parts[0] == "subjects" && parts[2] == "versions":
		subject := parts[1]
		cand, ok := readSchema(w, req)
		if !ok {
			return true
		}
		vs := r.versions(subject)
		for _, v := range vs {
			if v.Schema.Schema == cand.Schema {
				return false // already registered: srfake answers with its id
			}
		}
		if err := r.check(subject, cand, vs); err != nil {
			writeErr(w, http.StatusConflict, 409, err.Error())
			return true
		}
		return false
	case req.Method == http.MethodPost && len(parts) >= 4 && parts[0] == "compatibility" && parts[1] == "subjects":
		subject := parts[2]
		cand, ok := readSchema(w, req)
		if !ok {
			return true
		}
		vs := r.versions(subject)
		if len(parts) == 5 && parts[4] != "latest" && len(vs) > 0 {
			// against one version
			for _, v := range vs {
				if fmt.Sprint(v.Version) == parts[4] {
					vs = []sr.SubjectSchema{v}
				}
			}
		}
		err := r.check(subject, cand, vs)
		resp := map[string]any{"is_compatible": err == nil}
		if err != nil {
			resp["messages"] = []string{err.Error()}
		}
		w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
		json.NewEncoder(w).Encode(resp)
		return true
	}
	return false
}

// readSchema reads the request body and puts it back for srfake.
func readSchema(w http.ResponseWriter, req *http.Request) (sr.Schema, bool) {
	body, err := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(body))
	var s sr.Schema
	if err == nil {
		err = json.Unmarshal(body, &s)
	}
	if err != nil {
		writeErr(w, http.StatusUnprocessableEntity, 42201, "invalid schema: "+err.Error())
		return s, false
	}
	return s, true
}

func writeErr(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error_code": code, "message": msg})
}

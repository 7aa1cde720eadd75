package elasticsearch

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/logutil"
	"github.com/fluxstream/fluxstream/internal/tlsconf"
)

// Config is the sink's config (sample.yaml shows every key).
type Config struct {
	// Flavor is "elasticsearch" (8.x; the server must send
	// X-Elastic-Product: Elasticsearch) or "opensearch" (2.x).
	Flavor    string   `yaml:"flavor"`
	Addresses []string `yaml:"addresses"`

	// Basic auth: username with password or password_file (one of them).
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// APIKey is the base64 "id:api_key" Elasticsearch shows as "encoded".
	APIKey     string `yaml:"api_key"`
	APIKeyFile string `yaml:"api_key_file"`
	// BearerToken is sent as "Authorization: Bearer ..." (service
	// accounts, OAuth proxies).
	BearerToken     string    `yaml:"bearer_token"`
	BearerTokenFile string    `yaml:"bearer_token_file"`
	TLS             TLSConfig `yaml:"tls"`

	// Profile names the document layout: native, ecs or slurm.
	Profile string       `yaml:"profile"`
	Events  EventsConfig `yaml:"events"`
	Jobs    JobsConfig   `yaml:"jobs"`

	Templates TemplatesConfig `yaml:"templates"`
	// ObjectFields is how Flux's free-form objects (event context,
	// annotations) are mapped: flattened (Elasticsearch), flat_object
	// (OpenSearch) or disabled (stored, not searchable). Default by flavor.
	ObjectFields string `yaml:"object_fields"`

	Flush FlushConfig `yaml:"flush"`
	// InFlight is how many bulk requests one write keeps in flight.
	InFlight int `yaml:"in_flight"`
	// RequestTimeout bounds one bulk request (a stalled server).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// BulkRetry is the retry of failed items inside one write, before
	// the write hands them back to the runtime (which retries them with
	// its own backoff, forever).
	BulkRetry BulkRetryConfig `yaml:"bulk_retry"`
	// Compress gzips request bodies.
	Compress bool `yaml:"compress"`
}

// TLSConfig is TLS to the cluster (https:// addresses).
type TLSConfig = tlsconf.Config

// EventsConfig is the events index: one document per event.
type EventsConfig struct {
	Enabled *bool `yaml:"enabled"`
	// Index is the index name, with strftime conversions (%Y %m %d %H %j
	// %y %%) taken from the event time in UTC; a data stream's name when
	// DataStream is set.
	Index      string `yaml:"index"`
	DataStream bool   `yaml:"data_stream"`
}

// JobsConfig is the jobs index: one document per job, its latest snapshot.
type JobsConfig struct {
	Enabled *bool  `yaml:"enabled"`
	Index   string `yaml:"index"`
}

// TemplatesConfig is what Prepare installs.
type TemplatesConfig struct {
	Install *bool `yaml:"install"`
	// Name prefixes the component and index templates' names.
	Name string `yaml:"name"`
	// Priority of the index templates; above 100, the built-in
	// logs-*-* / metrics-*-* templates.
	Priority int  `yaml:"priority"`
	Shards   int  `yaml:"shards"`
	Replicas *int `yaml:"replicas"`
	// ILMPolicy is an Elasticsearch ILM policy name
	// (index.lifecycle.name); the policy itself is the site's.
	ILMPolicy       string `yaml:"ilm_policy"`
	RefreshInterval string `yaml:"refresh_interval"`
}

// FlushConfig sizes bulk requests.
type FlushConfig struct {
	// MaxBytes and MaxRecords bound one bulk request's body and documents.
	MaxBytes   core.ByteSize `yaml:"max_bytes"`
	MaxRecords int           `yaml:"max_records"`
	// Interval is the least time between two writes that are not full
	// (fewer than max_records, less than max_bytes): a write waits out the
	// rest, so that records arriving meanwhile go in the next one, bigger.
	// 0 sends at once.
	Interval time.Duration `yaml:"interval"`
}

// BulkRetryConfig bounds the in-write retry of 429/5xx items.
type BulkRetryConfig struct {
	Attempts       int           `yaml:"attempts"`
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
}

func boolp(b bool) *bool { return &b }

func defaults() Config {
	one := 1
	return Config{
		Flavor:    "elasticsearch",
		Addresses: []string{"http://localhost:9200"},
		Profile:   "native",
		Events:    EventsConfig{Index: "flux-events-%Y.%m.%d"},
		Jobs:      JobsConfig{Index: "flux-jobs"},
		Templates: TemplatesConfig{Name: "fluxstream", Priority: 200, Shards: 1, Replicas: &one},
		Flush:     FlushConfig{MaxBytes: 5 << 20, MaxRecords: 1000, Interval: time.Second},
		InFlight:  2, RequestTimeout: 30 * time.Second,
		BulkRetry: BulkRetryConfig{Attempts: 3, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second},
	}
}

func (c *Config) eventsOn() bool    { return c.Events.Enabled == nil || *c.Events.Enabled }
func (c *Config) jobsOn() bool      { return c.Jobs.Enabled == nil || *c.Jobs.Enabled }
func (c *Config) templatesOn() bool { return c.Templates.Install == nil || *c.Templates.Install }

// objectType is the mapping of free-form objects.
func (c *Config) objectType() string {
	if c.ObjectFields != "" {
		return c.ObjectFields
	}
	if c.Flavor == "opensearch" {
		return "flat_object"
	}
	return "flattened"
}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	var errs []error
	switch c.Flavor {
	case "elasticsearch", "opensearch":
	default:
		errs = append(errs, core.Fieldf("flavor", "unknown flavor %q (elasticsearch, opensearch)", c.Flavor))
	}
	if len(c.Addresses) == 0 {
		errs = append(errs, core.Fieldf("addresses", "must list at least one URL (https://es1:9200)"))
	}
	for _, a := range c.Addresses {
		u, err := url.Parse(a)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs = append(errs, core.Fieldf("addresses", "%q is not an http:// or https:// URL", logutil.RedactURL(a)))
		case u.User != nil:
			errs = append(errs, core.Fieldf("addresses", "%q: credentials do not belong in an address (username, password_file, api_key)", logutil.RedactURL(a)))
		}
	}
	switch c.Profile {
	case "native", "ecs", "slurm":
	default:
		errs = append(errs, core.Fieldf("profile", "unknown profile %q (native, ecs, slurm)", c.Profile))
	}
	// Credentials: one kind only.
	kinds := []string{}
	if c.Password != "" || c.PasswordFile != "" {
		kinds = append(kinds, "password")
	}
	if c.APIKey != "" || c.APIKeyFile != "" {
		kinds = append(kinds, "api_key")
	}
	if c.BearerToken != "" || c.BearerTokenFile != "" {
		kinds = append(kinds, "bearer_token")
	}
	if len(kinds) > 1 {
		errs = append(errs, core.Fieldf(kinds[1], "cannot be combined with %s: give one way to authenticate", kinds[0]))
	}
	for _, p := range [][3]string{{"password", c.Password, c.PasswordFile}, {"api_key", c.APIKey, c.APIKeyFile}, {"bearer_token", c.BearerToken, c.BearerTokenFile}} {
		if p[1] != "" && p[2] != "" {
			errs = append(errs, core.Fieldf(p[0]+"_file", "give %s or %s_file, not both", p[0], p[0]))
		}
	}
	if (c.Password != "" || c.PasswordFile != "") && c.Username == "" {
		errs = append(errs, core.Fieldf("username", "must be set with a password"))
	}
	if c.Username != "" && c.Password == "" && c.PasswordFile == "" {
		errs = append(errs, core.Fieldf("password_file", "username %q needs a password (password_file, or password: ${file:...})", c.Username))
	}
	if err := c.TLS.Check(); err != nil {
		errs = append(errs, err)
	}
	if !c.eventsOn() && !c.jobsOn() {
		errs = append(errs, core.Fieldf("", "events and jobs are both disabled: nothing to write"))
	}
	if c.eventsOn() {
		if err := checkIndexName(c.Events.Index, true); err != nil {
			errs = append(errs, core.Fieldf("events.index", "%v", err))
		} else {
			dated := hasDate(c.Events.Index)
			switch {
			case c.Events.DataStream && dated:
				errs = append(errs, core.Fieldf("events.index", "%q: a data stream is one name and rolls over by itself; drop the date pattern", c.Events.Index))
			case !c.Events.DataStream && !dated:
				errs = append(errs, core.Fieldf("events.index", "%q has no date pattern: events are written with create, one document each, forever, so a plain index needs one (flux-events-%%Y.%%m.%%d) to be rotated and deleted by age; or set data_stream: true", c.Events.Index))
			}
		}
	}
	if c.jobsOn() {
		if err := checkIndexName(c.Jobs.Index, true); err != nil {
			errs = append(errs, core.Fieldf("jobs.index", "%v", err))
		} else if strings.Contains(c.Jobs.Index, "%") {
			errs = append(errs, core.Fieldf("jobs.index", "%q: the jobs index holds one document per job, updated in place by version; a date pattern would split a job over several indices", c.Jobs.Index))
		}
	}
	if c.eventsOn() && c.jobsOn() && c.Events.Index == c.Jobs.Index {
		errs = append(errs, core.Fieldf("jobs.index", "must differ from events.index"))
	}
	switch c.ObjectFields {
	case "", "disabled":
	case "flattened":
		if c.Flavor == "opensearch" {
			errs = append(errs, core.Fieldf("object_fields", "flattened is Elasticsearch's; OpenSearch has flat_object"))
		}
	case "flat_object":
		if c.Flavor == "elasticsearch" {
			errs = append(errs, core.Fieldf("object_fields", "flat_object is OpenSearch's; Elasticsearch has flattened"))
		}
	default:
		errs = append(errs, core.Fieldf("object_fields", "unknown %q (flattened, flat_object, disabled)", c.ObjectFields))
	}
	if c.Templates.Priority <= 100 {
		errs = append(errs, core.Fieldf("templates.priority", "%d would let the built-in logs-*-* templates (priority 100) shadow ours; use more than 100", c.Templates.Priority))
	}
	if c.Templates.Name == "" || strings.ToLower(c.Templates.Name) != c.Templates.Name || strings.ContainsAny(c.Templates.Name, " */\\?\"<>|,#") {
		errs = append(errs, core.Fieldf("templates.name", "%q must be a non-empty lowercase name", c.Templates.Name))
	}
	if c.Templates.ILMPolicy != "" && c.Flavor == "opensearch" {
		errs = append(errs, core.Fieldf("templates.ilm_policy", "OpenSearch has no ILM; its ISM policies attach themselves to indices by their ism_template"))
	}
	if c.Templates.Shards < 1 || (c.Templates.Replicas != nil && *c.Templates.Replicas < 0) {
		errs = append(errs, core.Fieldf("templates", "shards must be at least 1 and replicas at least 0"))
	}
	if c.Flush.MaxBytes < 1024 || c.Flush.MaxRecords < 1 || c.Flush.Interval < 0 {
		errs = append(errs, core.Fieldf("flush", "max_bytes (at least 1KiB) and max_records must be positive, interval not negative"))
	}
	if c.InFlight < 1 || c.InFlight > 64 {
		errs = append(errs, core.Fieldf("in_flight", "%d: between 1 and 64", c.InFlight))
	}
	if c.RequestTimeout < 100*time.Millisecond {
		errs = append(errs, core.Fieldf("request_timeout", "%s is too short (at least 100ms)", c.RequestTimeout))
	}
	if c.BulkRetry.Attempts < 1 || c.BulkRetry.InitialBackoff <= 0 || c.BulkRetry.MaxBackoff < c.BulkRetry.InitialBackoff {
		errs = append(errs, core.Fieldf("bulk_retry", "attempts at least 1, 0 < initial_backoff <= max_backoff"))
	}
	return errors.Join(errs...)
}

// checkIndexName checks an index name (with strftime conversions if
// allowed) against Elasticsearch's rules.
func checkIndexName(name string, dates bool) error {
	if name == "" {
		return errors.New("must be set")
	}
	for i := 0; i < len(name); i++ {
		if name[i] != '%' {
			continue
		}
		if i+1 >= len(name) {
			return fmt.Errorf("%q ends with a lone %%", name)
		}
		i++
		if !dates && name[i] != '%' {
			return fmt.Errorf("%q: no date conversions here", name)
		}
		if !strings.ContainsRune("YmdHjy%", rune(name[i])) {
			return fmt.Errorf("%q: unknown conversion %%%c (%%Y %%m %%d %%H %%j %%y %%%%)", name, name[i])
		}
	}
	plain := strings.NewReplacer("%Y", "", "%m", "", "%d", "", "%H", "", "%j", "", "%y", "", "%%", "").Replace(name)
	if strings.ToLower(plain) != plain {
		return fmt.Errorf("%q: index names are lowercase", name)
	}
	if strings.ContainsAny(name, " \\/*?\"<>|,#:") || strings.HasPrefix(name, "_") || strings.HasPrefix(name, "-") || strings.HasPrefix(name, "+") {
		return fmt.Errorf("%q: not a valid index name (no spaces, \\ / * ? \" < > | , # :, nor a leading _ - +)", name)
	}
	return nil
}

func hasDate(name string) bool {
	for i := 0; i+1 < len(name); i++ {
		if name[i] == '%' {
			if name[i+1] != '%' {
				return true
			}
			i++
		}
	}
	return false
}

// formatIndex expands the strftime conversions of name at ts (UTC).
func formatIndex(name string, ts float64) string {
	if !strings.Contains(name, "%") {
		return name
	}
	t := time.Unix(0, int64(ts*1e9)).UTC()
	b := make([]byte, 0, len(name)+8)
	for i := 0; i < len(name); i++ {
		if name[i] != '%' || i+1 == len(name) {
			b = append(b, name[i])
			continue
		}
		i++
		switch name[i] {
		case 'Y':
			b = t.AppendFormat(b, "2006")
		case 'y':
			b = t.AppendFormat(b, "06")
		case 'm':
			b = t.AppendFormat(b, "01")
		case 'd':
			b = t.AppendFormat(b, "02")
		case 'H':
			b = t.AppendFormat(b, "15")
		case 'j':
			b = fmt.Appendf(b, "%03d", t.YearDay())
		default:
			b = append(b, name[i])
		}
	}
	return string(b)
}

// indexPattern is the template pattern of an index name: each date
// conversion becomes *.
func indexPattern(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] == '%' && i+1 < len(name) {
			i++
			if name[i] == '%' {
				b.WriteByte('%')
			} else if !strings.HasSuffix(b.String(), "*") {
				b.WriteByte('*')
			}
			continue
		}
		b.WriteByte(name[i])
	}
	return b.String()
}

// secret returns the inline value, or the first line of the file.
func secret(inline, file string) (string, error) {
	if file == "" {
		return inline, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return s, nil
}

package core

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// HTTPConfig is the metrics and health server (`http:`).
type HTTPConfig struct {
	Listen string `yaml:"listen"` // host:port
	// UnhealthyAfter is how long a sink may fail before /readyz says so.
	UnhealthyAfter time.Duration `yaml:"unhealthy_after"`
}

// DefaultUnhealthyAfter is http.unhealthy_after when not set.
const DefaultUnhealthyAfter = 5 * time.Minute

// loadHTTP decodes and checks the http: section.
func (cfg *Config) loadHTTP(v any) ConfigErrors {
	m, ok := v.(map[string]any)
	if !ok {
		return ConfigErrors{cfg.errAt("http", "want a mapping with listen (and unhealthy_after)")}
	}
	h := &HTTPConfig{UnhealthyAfter: DefaultUnhealthyAfter}
	n := &NodeConfig{cfg: cfg, path: "http", raw: m}
	if err := n.Decode(h); err != nil {
		return flattenConfigErrors(err)
	}
	var errs ConfigErrors
	if h.Listen == "" {
		errs = append(errs, cfg.errAt("http", "listen is missing (host:port, e.g. 127.0.0.1:9180)"))
	} else if _, port, err := net.SplitHostPort(h.Listen); err != nil {
		errs = append(errs, cfg.errAt("http.listen", fmt.Sprintf("want host:port (e.g. 127.0.0.1:9180), got %q", h.Listen)))
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		// Port 0 picks a free port (the log names it).
		errs = append(errs, cfg.errAt("http.listen", fmt.Sprintf("port %q is not a number from 0 to 65535", port)))
	}
	if h.UnhealthyAfter <= 0 {
		errs = append(errs, cfg.errAt("http.unhealthy_after", fmt.Sprintf("want a positive duration like 5m, got %s", h.UnhealthyAfter)))
	}
	cfg.HTTP = h
	return errs
}

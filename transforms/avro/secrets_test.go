package avro

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/srtest"
)

// No registry password reaches a log line or an error: not in the URL
// (http://user:secret@host), not from the password key, not when the
// registry is unreachable, down, or refuses the credentials and echoes
// them back.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	const urlSecret, keySecret = "url-S3cret", "key-S3cret"
	var logs coretest.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	check := func(what, text string) {
		t.Helper()
		for _, s := range []string{urlSecret, keySecret, "S3cret"} {
			if strings.Contains(text, s) {
				t.Errorf("%s shows a secret: %s", what, text)
			}
		}
	}
	provision := func(yaml string, kv core.KV) error {
		t.Helper()
		tr := newTransform(t, yaml)
		return tr.Provision(context.Background(), core.NodeContext{Logger: log, State: kv})
	}

	// Unreachable, credentials in the URL.
	err := provision("registry:\n  urls: [\"http://fluxstream:"+urlSecret+"@127.0.0.1:1\"]\n  timeout: 2s\n", nil)
	if err == nil || !strings.Contains(err.Error(), "schema registry [http://fluxstream:xxxxx@127.0.0.1:1]") {
		t.Errorf("unreachable registry: %v", err)
	}
	if err != nil {
		check("unreachable registry error", err.Error())
	}

	// Refuses the credentials and echoes the Authorization header and URL.
	reg := srtest.New()
	defer reg.Close()
	reg.RequireAuth("fluxstream", "the-right-one")
	host := strings.TrimPrefix(reg.URL(), "http://")
	for _, yaml := range []string{
		"registry:\n  urls: [\"http://fluxstream:" + urlSecret + "@" + host + "\"]\n",
		"registry:\n  urls: [" + reg.URL() + "]\n  username: fluxstream\n  password: " + keySecret + "\n",
	} {
		err := provision(yaml, nil)
		if err == nil || !strings.Contains(err.Error(), "Unauthorized: credentials") {
			t.Errorf("wrong credentials: %v", err)
			continue
		}
		check("wrong-credentials error", err.Error())
	}

	// Down at a later start: the remembered id is used, and said so.
	reg2 := srtest.New()
	defer reg2.Close()
	kv := core.NewMemKV()
	yaml := "registry:\n  urls: [\"http://fluxstream:" + urlSecret + "@" + strings.TrimPrefix(reg2.URL(), "http://") + "\"]\n  password: " + keySecret + "\n  username: fluxstream\n"
	if err := provision(yaml, kv); err != nil {
		t.Fatal(err)
	}
	reg2.Down()
	if err := provision(yaml, kv); err != nil {
		t.Fatalf("registry down with a remembered id: %v", err)
	}
	if !strings.Contains(logs.String(), "using the schema id remembered") || !strings.Contains(logs.String(), "fluxstream:xxxxx@") {
		t.Errorf("log:\n%s", logs.String())
	}
	check("the log", logs.String())
}

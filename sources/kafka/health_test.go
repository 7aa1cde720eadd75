package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
	kafkasource "github.com/fluxstream/fluxstream/sources/kafka"
)

// /readyz asks the kafka source whether a broker answers: yes while the
// cluster runs, no (with the reason) once it is stopped, yes again after
// it is back.
func TestSourceStateFollowsBrokers(t *testing.T) {
	c := kafkatest.Start(t, kafkatest.Options{Brokers: 1, Topics: map[string]int{"jobs": 1}})
	dir := t.TempDir()
	g := coretest.Build(t, registry(), fmt.Sprintf(`
sources:
  kafka: {type: kafka, brokers: [%s], topics: [jobs], group: g}
sinks:
  got: {type: file, inputs: [kafka], path: %s/got.jsonl}
`, strings.Join(c.Addrs(), ", "), dir))
	p := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: coretest.Quiet(), ShutdownTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-errc
	}()
	waitState := func(connected bool, detail string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if src, _ := p.Node("kafka").(*kafkasource.Source); src != nil {
				st := src.SourceState()
				if st.Connected == connected && strings.Contains(st.Detail, detail) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("source state %+v, want connected=%v with %q", st, connected, detail)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitState(true, "")
	c.Stop()
	waitState(false, "no broker answers")
	c.Restart()
	waitState(true, "")
}

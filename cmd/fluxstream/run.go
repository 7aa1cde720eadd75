package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/builtin"
)

// demoConfig is what `fluxstream run` runs with no config: the recorded
// scenario journal shipped in the binary, through the same replay source,
// job state reducer, disk spool and file sink a real deployment uses.
const demoConfig = `
data_dir: %[1]s/state
cluster: demo
log: {level: warn} # the demo's own lines tell what happened
sources:
  journal:
    type: replay
    path: embedded:scenario
sinks:
  records:
    type: file
    inputs: [journal]
    path: %[1]s/records.jsonl
`

// quickConfig is `fluxstream run --uri URI`: one Flux instance to stdout.
const quickConfig = `
sources:
  flux:
    type: flux
    uri: %q
sinks:
  stdout:
    type: stdout
    inputs: [flux]
    format: %s
    buffer:
      type: memory
`

func newRunCmd(g *globalFlags) *cobra.Command {
	var dataDir, uri, format, demoDir string
	var fresh bool
	cmd := &cobra.Command{
		Use:   "run [-c FILE]",
		Short: "Run the pipeline (with no config: a demo on a recorded journal)",
		Long: `run starts the DAG of the config and runs until SIGINT/SIGTERM, then drains every
sink (bounded by shutdown_timeout) and exits. Undelivered records stay in the sinks'
spools for the next start.

With no config, run replays a recorded Flux journal shipped in the binary into
./fluxstream-demo/records.jsonl. To stream a real instance, run as its owner:

  fluxstream run --uri local:///run/flux/local      # events to stdout
  fluxstream run -c /etc/fluxstream/config.yaml     # the full DAG (see config.example.yaml)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var graph *core.Graph
			var err error
			demo := false
			switch {
			case g.config != "":
				if uri != "" {
					return configError(fmt.Errorf("--uri and -c exclude each other: set the uri in the config's flux source"))
				}
				graph, err = g.load()
			case uri != "":
				if format != "json" && format != "text" {
					return configError(fmt.Errorf("unknown --format %q (json, text)", format))
				}
				graph, err = buildInline("--uri", fmt.Sprintf(quickConfig, uri, format))
				if err == nil && dataDir == "" {
					// A look at an instance: its own throwaway state, so it
					// never marks events as delivered for a real pipeline.
					tmp, terr := os.MkdirTemp("", "fluxstream-watch-")
					if terr != nil {
						return terr
					}
					defer os.RemoveAll(tmp)
					dataDir = tmp
				}
			default:
				demo = true
				dir, _ := filepath.Abs(demoDir)
				graph, err = buildInline("demo", fmt.Sprintf(demoConfig, dir))
			}
			if err != nil {
				return err
			}
			log, err := g.logger(graph.Config.Log)
			if err != nil {
				return err
			}
			if demo {
				fmt.Fprintf(g.stderr, "No config given: running the built-in demo, a journal recorded on a flux-core 0.88 instance\n(23 jobs: successes, failures, a timeout, held and updated jobs, cancels, a purge),\nthrough the job state reducer into %s/records.jsonl.\n\n", demoDir)
			}
			srvConfig := graph.Config.HTTP
			srv, err := startHTTP(srvConfig, log)
			if err != nil {
				return &exitError{exitFail, err}
			}
			defer srv.Close()
			ctx, cancel := signalContext(g.stderr)
			defer cancel()
			var hup chan os.Signal
			if g.config != "" {
				// SIGHUP reloads the config; the demo and --uri have none.
				hup = make(chan os.Signal, 1)
				signal.Notify(hup, syscall.SIGHUP)
				defer signal.Stop(hup)
			}
			for {
				p := core.NewPipeline(graph, core.RunOptions{Logger: log, DataDir: dataDir})
				srv.Attach(p)
				if fresh {
					if err := moveCheckpointAside(p.DataDir(), log); err != nil {
						return &exitError{exitFail, err}
					}
					fresh = false
				}
				runCtx, stopRun := context.WithCancel(ctx)
				reloaded := make(chan *core.Graph, 1)
				watched := make(chan struct{})
				go func() {
					defer close(watched)
					watchReload(runCtx, g, hup, p, srvConfig, dataDir, log, func(next *core.Graph) {
						reloaded <- next
						stopRun()
					})
				}()
				start := time.Now()
				stopProgress := startProgress(runCtx, graph, g.stderr, log)
				runErr := p.Run(runCtx)
				stopRun()
				stopProgress()
				<-watched
				var undelivered *core.UndeliveredError
				if next := drain(reloaded); next != nil && ctx.Err() == nil {
					if runErr != nil && !errors.As(runErr, &undelivered) {
						return &exitError{exitFail, fmt.Errorf("while stopping for the reload: %w", runErr)}
					}
					if undelivered != nil {
						log.Warn("reload: records still wait after the shutdown timeout; they stay in the spools (memory buffers: the source sends them again)", "records", undelivered.Records)
					}
					if nl, err := g.logger(next.Config.Log); err == nil {
						log = nl
					}
					graph = next
					log.Info("config reloaded; pipeline restarted", "config", g.config, "nodes", len(graph.Nodes))
					continue
				}
				if demo && runErr == nil {
					printDemoSummary(g, p, demoDir, time.Since(start))
				}
				if errors.As(runErr, &undelivered) {
					return &exitError{exitUndelivered, runErr}
				}
				if runErr != nil {
					return &exitError{exitFail, runErr}
				}
				return nil
			}
		},
	}
	cmd.Flags().BoolVar(&fresh, "fresh", false, "start over: move the checkpoint aside (state.db -> state.db.replaced-TIME) so every event Flux has is sent again; spools are kept")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "state directory: checkpoints and spools (overrides data_dir)")
	cmd.Flags().StringVar(&uri, "uri", "", "stream this Flux instance to stdout without a config (e.g. local:///run/flux/local)")
	cmd.Flags().StringVar(&format, "format", "json", "with --uri: json (one record per line) or text")
	cmd.Flags().StringVar(&demoDir, "demo-dir", "fluxstream-demo", "with no config: where the demo writes")
	return cmd
}

// drain returns what c holds, or nil.
func drain(c chan *core.Graph) *core.Graph {
	select {
	case g := <-c:
		return g
	default:
		return nil
	}
}

// watchReload waits for SIGHUP while ctx lives. Each one reloads the
// config file: a config that does not load, or changes what cannot change
// in a running process, is refused with a log line and the running
// pipeline goes on; a good one is handed to apply, which restarts the
// pipeline on it. Records are neither lost nor sent twice by the restart:
// sources stop at their checkpoint, sinks drain what they hold (spools
// persist what the shutdown timeout leaves), and the new pipeline goes on
// from the checkpoint. An added sink receives events from then on.
func watchReload(ctx context.Context, g *globalFlags, hup <-chan os.Signal, running *core.Pipeline, httpCfg *core.HTTPConfig, dataDirFlag string, log *slog.Logger, apply func(*core.Graph)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info("SIGHUP: reloading the config", "config", g.config)
		next, err := g.load()
		if err == nil {
			if dir := core.EffectiveDataDir(next, dataDirFlag); dir != running.DataDir() {
				err = fmt.Errorf("data_dir changed from %s to %s: that needs a restart (the checkpoint and spools live there)", running.DataDir(), dir)
			} else if !reflect.DeepEqual(next.Config.HTTP, httpCfg) {
				err = errors.New("http changed: the metrics and health listener is not restarted by a reload; restart fluxstream for that")
			}
		}
		if err == nil {
			_, err = g.logger(next.Config.Log)
		}
		if err != nil {
			log.Error("reload refused; the running config stays in effect", "config", g.config, "error", oneLine(err))
			continue
		}
		apply(next)
		return
	}
}

// moveCheckpointAside renames dataDir/state.db so the next run starts
// with no checkpoint; the spools stay (what they hold still goes out).
func moveCheckpointAside(dataDir string, log *slog.Logger) error {
	path := filepath.Join(dataDir, "state.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		log.Info("--fresh: no checkpoint yet", "data_dir", dataDir)
		return nil
	}
	aside := path + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(path, aside); err != nil {
		return fmt.Errorf("--fresh: %w", err)
	}
	log.Warn("--fresh: checkpoint moved aside; every event Flux still has is sent again", "moved_to", aside)
	return nil
}

func buildInline(name, yaml string) (*core.Graph, error) {
	cfg, err := core.LoadConfig(name, []byte(yaml), core.LoadOptions{})
	if cfg == nil {
		return nil, configError(err)
	}
	graph, err := core.Build(cfg, builtin.Registry())
	if err != nil {
		return nil, configError(err)
	}
	return graph, nil
}

func printDemoSummary(g *globalFlags, p *core.Pipeline, dir string, took time.Duration) {
	var src, sink core.StatsSnapshot
	for _, s := range p.Stats() {
		switch s.Kind {
		case core.KindSource:
			src = s
		case core.KindSink:
			sink = s
		}
	}
	out := g.stdout
	if src.Out == 0 {
		fmt.Fprintf(out, "Nothing new: every event of the recorded journal was delivered by an earlier run\n(the checkpoint in %s/state says so; delete %s to replay it again).\n", dir, dir)
	} else {
		fmt.Fprintf(out, "Replayed the recorded journal in %s: %d records (job events with the job's state\nat each event, and purge records) written to %s/records.jsonl.\n",
			took.Round(time.Millisecond), sink.Out, dir)
		fmt.Fprintf(out, "Look at one job's last event:  grep '\"jobid\":\"fCHcyt63\"' %s/records.jsonl | grep '\"kind\":\"event\"' | tail -1\n", dir)
		fmt.Fprintf(out, "Run again: nothing is sent twice (the checkpoint remembers what each sink took).\n")
	}
	self := selfCommand()
	fmt.Fprintf(out, "\nTo stream a real Flux instance, run as its owner (user flux on a system instance):\n"+
		"  %s run --uri local:///run/flux/local       # every event to stdout\n"+
		"  %s run -c config.yaml                      # Kafka, files, ... (see config.example.yaml)\n", self, self)
}

// selfCommand is how the user can run fluxstream again: the binary's name,
// or "go run ./cmd/fluxstream" when it runs from go run's temporary build.
func selfCommand() string {
	exe, err := os.Executable()
	if err == nil && strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return "go run ./cmd/fluxstream"
	}
	return "fluxstream"
}

// Command fluxstream streams every job event of a Flux instance to where a
// site needs it, through a DAG of sources, transforms and sinks described
// in one YAML file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/builtin"
)

// Set with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1 // the pipeline failed
	exitConfig = 2 // bad config or usage: nothing was started
	// exitUndelivered: stopped by the shutdown timeout with records still
	// spooled; nothing is lost, they go out at the next start.
	exitUndelivered = 3
)

// defaultGCPercent is GOGC unless the environment sets it: the pipeline
// allocates a record per event, and at the Go default (100) the collector
// took ~15% of the CPU of a replay; 200 takes about half that for ~25 MB
// more memory.
const defaultGCPercent = 200

// earlySignals, when main set it, has been notified of SIGINT and SIGTERM
// since the process started: a stop sent while `run` is still loading its
// config or opening its state is a clean stop too, not the default
// action's kill (systemd, a test stopping a process it just started).
var earlySignals chan os.Signal

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	// Only for run: other commands keep the default action, so ^C ends
	// them at once.
	if slices.Contains(os.Args[1:], "run") {
		earlySignals = make(chan os.Signal, 2)
		signal.Notify(earlySignals, syscall.SIGINT, syscall.SIGTERM)
	}
	stopProfile := startCPUProfile()
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	os.Exit(code)
}

// startCPUProfile starts the CPU profile FLUXSTREAM_CPUPROFILE=FILE asks
// for (go tool pprof; how bench/ finds where a whole process spends its
// time) and returns what stops it.
func startCPUProfile() (stop func()) {
	path := os.Getenv("FLUXSTREAM_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "FLUXSTREAM_CPUPROFILE:", err)
		os.Exit(exitConfig)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func configError(err error) error { return &exitError{exitConfig, err} }

func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintln(stderr, ee.err)
		return ee.code
	}
	fmt.Fprintln(stderr, "error:", err)
	if strings.Contains(err.Error(), "unknown command") || strings.Contains(err.Error(), "flag") {
		return exitConfig
	}
	return exitFail
}

type globalFlags struct {
	config   string
	logLevel string
	replay   string // dry-run --replay: flux sources read this journal
	stdout   io.Writer
	stderr   io.Writer
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globalFlags{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "fluxstream",
		Short: "Stream every job event of a Flux instance to Kafka, files and more",
		Long: `fluxstream streams every job event of a Flux instance (job-manager.events-journal)
with the job's snapshot at that event, through transforms, to sinks: Kafka, files,
stdout. One YAML file describes the DAG (sources:, transforms:, sinks:).

Delivery is at-least-once to every sink, with stable idempotency keys; each sink
has its own disk spool, so a slow or down sink never stalls Flux or the others.

Try it: "fluxstream run" with no config replays a journal recorded on a real
Flux instance (shipped in the binary) into ./fluxstream-demo/.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVarP(&g.config, "config", "c", os.Getenv("FLUXSTREAM_CONFIG"), "config file (default $FLUXSTREAM_CONFIG)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "debug, info, warn or error (overrides log.level)")
	root.AddCommand(newRunCmd(g), newValidateCmd(g), newGraphCmd(g), newDryRunCmd(g), newVersionCmd(g))
	for _, newCmd := range moreCommands {
		root.AddCommand(newCmd(g))
	}
	return root
}

// moreCommands are subcommands that live in files of their own (jobs,
// plugins, ...); each file adds its constructor in an init func.
var moreCommands []func(*globalFlags) *cobra.Command

// load reads and builds the config, with every problem in one error.
func (g *globalFlags) load() (*core.Graph, error) { return g.loadWith(core.LoadOptions{}) }

// loadLenient loads for validate, graph and dry-run: what only a run needs
// (secret files) may be missing; each such problem is printed as a
// warning.
func (g *globalFlags) loadLenient() (*core.Graph, error) {
	graph, err := g.loadWith(core.LoadOptions{SecretsOptional: true})
	if err == nil {
		for _, w := range graph.Warnings() {
			fmt.Fprintln(g.stderr, "warning:", w)
		}
	}
	return graph, err
}

func (g *globalFlags) loadWith(opts core.LoadOptions) (*core.Graph, error) {
	if g.config == "" {
		return nil, configError(errors.New("no config: pass -c FILE (see config.example.yaml)"))
	}
	cfg, err := core.LoadConfigFile(g.config, opts)
	if cfg != nil && g.replay != "" {
		if len(cfg.ReplaySources(g.replay)) == 0 {
			return nil, configError(fmt.Errorf("--replay: %s has no flux source to replace", g.config))
		}
	}
	if cfg == nil {
		return nil, configError(err)
	}
	graph, err := core.Build(cfg, builtin.Registry())
	if err != nil {
		return nil, configError(fmt.Errorf("%s: invalid config:\n%w", g.config, err))
	}
	return graph, nil
}

func (g *globalFlags) logger(cfg core.LogConfig) (*slog.Logger, error) {
	level := cfg.Level
	if g.logLevel != "" {
		level = g.logLevel
	}
	var l slog.Level
	switch level {
	case "", "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, configError(fmt.Errorf("unknown log level %q (debug, info, warn, error)", level))
	}
	opts := &slog.HandlerOptions{Level: l}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
}

// signalContext ends on the first SIGINT/SIGTERM (graceful shutdown); a
// second one exits at once.
func signalContext(stderr io.Writer) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := earlySignals
	if ch == nil {
		ch = make(chan os.Signal, 2)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	}
	go func() {
		sig := <-ch
		fmt.Fprintf(stderr, "fluxstream: %s: shutting down (sinks drain; send again to stop at once)\n", sig)
		cancel()
		<-ch
		fmt.Fprintln(stderr, "fluxstream: stopped at once; undelivered records stay in the spools")
		os.Exit(exitFail)
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel()
	}
}

func newVersionCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			commit := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						commit = " " + s.Value
					}
				}
			}
			fmt.Fprintf(g.stdout, "fluxstream %s%s (%s %s/%s; Flux journal protocol of flux-core 0.88)\n",
				version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

func newValidateCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "validate -c FILE",
		Short: "Check a config: every problem at once, with file:line and key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			graph, err := g.loadLenient()
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s: ok (%d sources, %d transforms, %d sinks)\n", g.config,
				len(graph.Sources()), len(graph.Transforms()), len(graph.Sinks()))
			return nil
		},
	}
}

func newGraphCmd(g *globalFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "graph -c FILE",
		Short: "Print the DAG as Graphviz DOT or a Mermaid flowchart",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			graph, err := g.loadLenient()
			if err != nil {
				return err
			}
			switch format {
			case "dot":
				return graph.WriteDOT(g.stdout)
			case "mermaid":
				return graph.WriteMermaid(g.stdout)
			}
			return configError(fmt.Errorf("unknown graph format %q (dot, mermaid)", format))
		},
	}
	cmd.Flags().StringVar(&format, "format", "dot", "dot or mermaid")
	return cmd
}

func newDryRunCmd(g *globalFlags) *cobra.Command {
	var replay string
	cmd := &cobra.Command{
		Use:   "dry-run -c FILE",
		Short: "Run the DAG without sending: every sink prints what it would send",
		Long: `dry-run builds the same DAG as run, but nothing leaves the process and nothing
is written: every sink prints, labelled with its name, what it would send (topic,
key, headers and value for Kafka). A flux source stops at the end of its backlog;
a replay source at the end of its files. No checkpoint or spool is read or written.
With no Flux to reach (a flux source that cannot connect before anything was
shown), it warns and shows the demo's recorded journal instead.

With --replay, every flux source reads a recorded journal instead (a file, or
embedded:scenario, the demo's): what the sinks of a real config would receive,
on a machine without Flux.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g.replay = replay
			graph, err := g.loadLenient()
			if err != nil {
				return err
			}
			log, err := g.logger(graph.Config.Log)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(g.stderr)
			defer cancel()
			out := &countingWriter{w: g.stdout}
			p := core.NewPipeline(graph, core.RunOptions{Logger: log, DryRun: true, DryRunOut: out})
			err = p.Run(ctx)
			if err != nil && replay == "" && hasFluxSource(graph) && out.n == 0 && ctx.Err() == nil {
				// No Flux here (a laptop, a fresh machine): show what the
				// sinks would get from a journal recorded on a real
				// instance rather than nothing.
				fmt.Fprintf(g.stderr, "warning: %v\nwarning: no Flux reachable; showing the journal recorded on a flux-core 0.88 instance instead (as dry-run --replay embedded:scenario does)\n", oneLine(err))
				g.replay = "embedded:scenario"
				if graph, err = g.loadWith(core.LoadOptions{SecretsOptional: true}); err != nil {
					return err
				}
				err = core.NewPipeline(graph, core.RunOptions{Logger: log, DryRun: true, DryRunOut: g.stdout}).Run(ctx)
			}
			if err != nil {
				return &exitError{exitFail, err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&replay, "replay", "", "flux sources read this recorded journal instead (a .jsonl[.gz] file, or embedded:scenario)")
	return cmd
}

// countingWriter counts what went through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func hasFluxSource(g *core.Graph) bool {
	for _, n := range g.Sources() {
		if n.Type == "flux" {
			return true
		}
	}
	return false
}

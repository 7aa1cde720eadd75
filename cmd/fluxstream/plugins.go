package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/plugins/host"
)

func init() { moreCommands = append(moreCommands, newPluginsCmd) }

func newPluginsCmd(g *globalFlags) *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "plugins -c FILE",
		Short: "List the config's sink plugins with what they say about themselves and their health",
		Long: `plugins starts every sink plugin of the config (type: plugin), one at a time, the
way run would (sha256 checked, config handed over), prints its Describe answer
(name, version, protocol version, summary) and its health, and stops it.
With -v it prints each plugin's config schema too. Exit status 1 if any fails.

  fluxstream plugins check PATH [-- ARGS...]

starts the program at PATH as a plugin, runs the handshake and Describe, and
says in one line what is wrong (wrong magic cookie, another protocol version,
junk on stdout, no gRPC, ...) or what it is, with its sha256 for the config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			graph, err := g.load()
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(g.stderr)
			defer cancel()
			failed, found := 0, 0
			for _, n := range graph.Sinks() {
				s, ok := n.Impl.(*host.Sink)
				if !ok {
					continue
				}
				found++
				s.Provision(ctx, nodeContext(n.Name, g.stderr))
				d, h, err := s.Inspect(ctx)
				if err != nil {
					failed++
					fmt.Fprintf(g.stdout, "%s: %s: FAILED: %s\n", n.Name, s.Path(), oneLine(err))
					continue
				}
				fmt.Fprintf(g.stdout, "%s: %s %s (protocol %d) %s\n", n.Name, d.Name, d.Version, d.ProtocolVersion, d.Path)
				if d.Summary != "" {
					fmt.Fprintf(g.stdout, "  %s\n", d.Summary)
				}
				switch {
				case h == nil:
				case h.OK:
					fmt.Fprintf(g.stdout, "  health: ok (%s)\n", h.Message)
				default:
					failed++
					fmt.Fprintf(g.stdout, "  health: NOT OK: %s\n", h.Message)
				}
				if verbose && d.ConfigSchema != "" {
					fmt.Fprintf(g.stdout, "  config schema: %s\n", compactJSON(d.ConfigSchema))
				}
			}
			if found == 0 {
				fmt.Fprintf(g.stdout, "%s: no sink of type plugin\n", g.config)
			}
			if failed > 0 {
				return &exitError{exitFail, fmt.Errorf("%d of %d plugins failed", failed, found)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print each plugin's config schema")
	cmd.AddCommand(newPluginsCheckCmd(g))
	return cmd
}

func newPluginsCheckCmd(g *globalFlags) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check PATH [-- ARGS...]",
		Short: "Start a plugin program, run the handshake and Describe, and say what is wrong in one line",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			d, err := host.Check(ctx, args[0], args[1:], nodeContext("check", g.stderr).Logger)
			if err != nil {
				var se *host.StartError
				if errors.As(err, &se) {
					return &exitError{exitFail, fmt.Errorf("%s: NOT A WORKING PLUGIN: %s", se.Path, se.Reason)}
				}
				return &exitError{exitFail, fmt.Errorf("%s: %v", args[0], oneLine(err))}
			}
			fmt.Fprintf(g.stdout, "%s: ok: %s %s, plugin protocol %d, gRPC with mTLS; sha256: %s\n",
				d.Path, d.Name, d.Version, d.ProtocolVersion, d.SHA256)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

// nodeContext is what a plugin sink needs to log outside a pipeline: its
// output at warn level and up (the plugin's own errors), on stderr.
func nodeContext(name string, stderr io.Writer) core.NodeContext {
	return core.NodeContext{Kind: "sink", Name: name, Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("sink", name)}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func compactJSON(s string) string {
	var v any
	if json.Unmarshal([]byte(s), &v) != nil {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

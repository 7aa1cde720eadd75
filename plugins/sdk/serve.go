package sdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/fluxstream/fluxstream/plugins/internal/sinkv1"
	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

// ServeSink serves impl to fluxstream and returns when fluxstream stops the
// plugin. Run by hand (without fluxstream's magic cookie), it says what
// the program is and exits with status 1.
func ServeSink(impl Sink) {
	if os.Getenv(wire.MagicCookieKey) != wire.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "This is a fluxstream sink plugin (magic cookie %s missing or wrong): it is started by fluxstream\n"+
			"(sink type `plugin`), not by hand. Try: fluxstream plugins check %s\n", wire.MagicCookieKey, os.Args[0])
		os.Exit(1)
	}
	watchParent()
	restoreStdout()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: wire.Handshake(),
		Plugins:         plugin.PluginSet{wire.PluginName: &wire.Plugin{Impl: &server{impl: impl}}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(wire.MaxMessageBytes), grpc.MaxSendMsgSize(wire.MaxMessageBytes),
				grpc.InitialWindowSize(wire.WindowBytes), grpc.InitialConnWindowSize(wire.WindowBytes),
				grpc.ReadBufferSize(wire.BufferBytes), grpc.WriteBufferSize(wire.BufferBytes))
			return grpc.NewServer(opts...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Level: hclog.Warn, Output: os.Stderr, JSONFormat: true}),
	})
}

// server adapts a Sink to the generated service.
type server struct {
	sinkv1.UnimplementedSinkServer
	impl Sink
	mu   sync.Mutex // Write, Flush, Close one at a time
}

func (s *server) Describe(context.Context, *sinkv1.DescribeRequest) (*sinkv1.DescribeResponse, error) {
	info := s.impl.Info()
	return &sinkv1.DescribeResponse{Name: info.Name, Version: info.Version, Summary: info.Summary,
		ConfigSchema: info.ConfigSchema, ProtocolVersion: uint32(wire.ProtocolVersion)}, nil
}

func (s *server) Configure(ctx context.Context, req *sinkv1.ConfigureRequest) (*sinkv1.ConfigureResponse, error) {
	err := s.impl.Configure(ctx, Config{Node: req.Node, Cluster: req.Cluster, JSON: req.ConfigJson})
	resp := &sinkv1.ConfigureResponse{}
	for _, e := range flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			resp.Errors = append(resp.Errors, &sinkv1.ConfigError{Key: fe.Key, Message: fe.Msg})
		} else {
			resp.Errors = append(resp.Errors, &sinkv1.ConfigError{Message: e.Error()})
		}
	}
	return resp, nil
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func (s *server) Write(ctx context.Context, req *sinkv1.WriteRequest) (*sinkv1.WriteResponse, error) {
	recs := make([]Record, len(req.Records))
	for i, r := range req.Records {
		recs[i] = Record{ID: r.Id, Key: r.Key, Kind: r.Kind, Event: r.Event, JSON: r.Json}
		if e := r.Encoded; e != nil {
			recs[i].Encoded = &Encoded{Format: e.Format, Value: e.Value, SchemaID: int(e.SchemaId), Headers: e.Headers}
		}
	}
	s.mu.Lock()
	err := s.impl.Write(ctx, recs)
	s.mu.Unlock()
	resp := &sinkv1.WriteResponse{Statuses: make([]*sinkv1.RecordStatus, len(recs))}
	var be *BatchError
	for i := range recs {
		var rerr error
		switch {
		case err == nil:
		case errors.As(err, &be):
			rerr = be.Failed(i)
		default:
			rerr = err
		}
		resp.Statuses[i] = status(rerr)
	}
	return resp, nil
}

// statusOK is shared by every OK answer (it is only ever marshalled).
var statusOK = &sinkv1.RecordStatus{Status: sinkv1.Status_STATUS_OK}

func status(err error) *sinkv1.RecordStatus {
	switch {
	case err == nil:
		return statusOK
	case IsPermanent(err):
		return &sinkv1.RecordStatus{Status: sinkv1.Status_STATUS_PERMANENT, Reason: err.Error()}
	}
	return &sinkv1.RecordStatus{Status: sinkv1.Status_STATUS_RETRY, Reason: err.Error()}
}

func (s *server) Flush(ctx context.Context, _ *sinkv1.FlushRequest) (*sinkv1.FlushResponse, error) {
	if f, ok := s.impl.(Flusher); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := f.Flush(ctx); err != nil {
			return nil, err
		}
	}
	return &sinkv1.FlushResponse{}, nil
}

func (s *server) Health(ctx context.Context, _ *sinkv1.HealthRequest) (*sinkv1.HealthResponse, error) {
	if h, ok := s.impl.(HealthChecker); ok {
		if err := h.Health(ctx); err != nil {
			return &sinkv1.HealthResponse{Ok: false, Message: err.Error()}, nil
		}
	}
	return &sinkv1.HealthResponse{Ok: true, Message: "ok"}, nil
}

func (s *server) Close(ctx context.Context, _ *sinkv1.CloseRequest) (*sinkv1.CloseResponse, error) {
	if c, ok := s.impl.(Closer); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := c.Close(ctx); err != nil {
			return nil, err
		}
	}
	return &sinkv1.CloseResponse{}, nil
}

// hostPID is the pid fluxstream says it has, 0 if unknown.
func hostPID() int {
	pid, _ := strconv.Atoi(os.Getenv(wire.EnvHostPID))
	return pid
}

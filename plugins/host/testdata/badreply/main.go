// Command badreply is a raw plugin (go-plugin and the generated service,
// no SDK) that answers Writes wrongly, as FXS_BAD says: "short" (one
// status too few), "long" (one too many), "unknown" (status 7), "huge" (an
// answer over 1MiB). Every other Write, and everything else, is answered
// correctly. It records the ids it answered OK for in FXS_BAD_LOG, one per
// line, so a test can tell that the host acknowledged nothing it was not
// told.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/fluxstream/fluxstream/plugins/internal/sinkv1"
	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

type server struct {
	sinkv1.UnimplementedSinkServer
	mode   string
	mu     sync.Mutex
	writes int
	log    *os.File
}

func (s *server) Describe(context.Context, *sinkv1.DescribeRequest) (*sinkv1.DescribeResponse, error) {
	return &sinkv1.DescribeResponse{Name: "badreply", Version: "0", ProtocolVersion: uint32(wire.ProtocolVersion)}, nil
}

func (s *server) Configure(context.Context, *sinkv1.ConfigureRequest) (*sinkv1.ConfigureResponse, error) {
	return &sinkv1.ConfigureResponse{}, nil
}

func (s *server) Write(_ context.Context, req *sinkv1.WriteRequest) (*sinkv1.WriteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	resp := &sinkv1.WriteResponse{}
	for range req.Records {
		resp.Statuses = append(resp.Statuses, &sinkv1.RecordStatus{Status: sinkv1.Status_STATUS_OK})
	}
	if s.writes%2 == 1 { // every other answer is broken
		switch s.mode {
		case "short":
			resp.Statuses = resp.Statuses[:len(resp.Statuses)-1]
		case "long":
			resp.Statuses = append(resp.Statuses, resp.Statuses[0])
		case "unknown":
			resp.Statuses[len(resp.Statuses)/2] = &sinkv1.RecordStatus{Status: 7}
		case "huge":
			resp.Statuses[0] = &sinkv1.RecordStatus{Status: sinkv1.Status_STATUS_OK, Reason: strings.Repeat("x", 2<<20)}
		}
		return resp, nil
	}
	for _, r := range req.Records {
		fmt.Fprintln(s.log, r.Id)
	}
	return resp, nil
}

func (s *server) Flush(context.Context, *sinkv1.FlushRequest) (*sinkv1.FlushResponse, error) {
	return &sinkv1.FlushResponse{}, nil
}

func (s *server) Close(context.Context, *sinkv1.CloseRequest) (*sinkv1.CloseResponse, error) {
	return &sinkv1.CloseResponse{}, nil
}

func main() {
	f, err := os.OpenFile(os.Getenv("FXS_BAD_LOG"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: wire.Handshake(),
		Plugins:         plugin.PluginSet{wire.PluginName: &wire.Plugin{Impl: &server{mode: os.Getenv("FXS_BAD"), log: f}}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxSendMsgSize(64<<20))...)
		},
	})
}

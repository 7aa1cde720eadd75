// Command variant is the Go webhook example made to misbehave through its
// environment, for the conformance tests:
//
//	FXS_VARIANT_PROTOCOL=N   speak plugin protocol N
//	FXS_VARIANT_CHATTY=1     print to stdout in init and in every Write
//	FXS_VARIANT_PANIC=N      panic in the Nth Write
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/fluxstream/fluxstream/plugins/examples/webhook"
	"github.com/fluxstream/fluxstream/plugins/internal/wire"
	"github.com/fluxstream/fluxstream/plugins/sdk"
)

func init() {
	if os.Getenv("FXS_VARIANT_CHATTY") != "" {
		fmt.Println("chatty plugin: hello from init, on stdout")
	}
	if v := os.Getenv("FXS_VARIANT_PROTOCOL"); v != "" {
		n, _ := strconv.Atoi(v)
		wire.ProtocolVersion = uint(n)
	}
}

type variant struct {
	webhook.Sink
	chatty  bool
	panicAt int
	writes  int
}

func (v *variant) Write(ctx context.Context, recs []sdk.Record) error {
	v.writes++
	if v.chatty {
		fmt.Printf("chatty plugin: writing %d records, on stdout\n", len(recs))
	}
	if v.writes == v.panicAt {
		panic(fmt.Sprintf("variant: panic in write %d", v.writes))
	}
	return v.Sink.Write(ctx, recs)
}

func main() {
	v := &variant{chatty: os.Getenv("FXS_VARIANT_CHATTY") != ""}
	v.panicAt, _ = strconv.Atoi(os.Getenv("FXS_VARIANT_PANIC"))
	sdk.ServeSink(v)
}

// grpcpeer: a grpc-go server and client for meshagent's interop tests.
//
//	grpcpeer server -port P -name N   echo any method as raw bytes; health and reflection
//	grpcpeer client -target HOST:PORT -method /pkg.Svc/M -hex HEX [-health]
//
// The server knows no protos: every unknown method echoes each request message back,
// with header x-server and trailer x-trailer, so a unary, client-, server- or bidi
// streaming call all work. It registers grpc.health.v1 (SERVING) and server reflection
// (which then describes the health service). The client makes one call and prints the
// replies (hex) and the status, for the test to read.
package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// rawCodec passes *[]byte messages through as bytes and leaves the others to protobuf.
// It takes protobuf's place ("proto"), so the echo handler and the typed health and
// reflection services share one server and one content type.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return proto.Marshal(v.(proto.Message))
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	if b, ok := v.(*[]byte); ok {
		*b = append([]byte(nil), data...)
		return nil
	}
	return proto.Unmarshal(data, v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

func init() { encoding.RegisterCodec(rawCodec{}) }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: grpcpeer server|client ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2:])
	case "client":
		client(os.Args[2:])
	default:
		os.Exit(2)
	}
}

func server(args []string) {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	port := flags.Int("port", 0, "port")
	name := flags.String("name", "go-peer", "server name")
	flags.Parse(args)
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		panic(err)
	}
	echo := func(_ any, stream grpc.ServerStream) error {
		stream.SetHeader(metadata.Pairs("x-server", *name))
		stream.SetTrailer(metadata.Pairs("x-trailer", "go"))
		for {
			var message []byte
			if err := stream.RecvMsg(&message); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			if err := stream.SendMsg(&message); err != nil {
				return err
			}
		}
	}
	s := grpc.NewServer(grpc.UnknownServiceHandler(echo))
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
	fmt.Printf("go peer ready on %d\n", listener.Addr().(*net.TCPAddr).Port)
	if err := s.Serve(listener); err != nil {
		panic(err)
	}
}

func client(args []string) {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	target := flags.String("target", "", "host:port")
	method := flags.String("method", "", "/pkg.Service/Method")
	payload := flags.String("hex", "", "request message, hex")
	count := flags.Int("count", 1, "request messages to send (a stream when > 1)")
	checkHealth := flags.Bool("health", false, "call grpc.health.v1 Check instead")
	flags.Parse(args)
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if *checkHealth {
		reply, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			fmt.Printf("status %s %s\n", status.Code(err), status.Convert(err).Message())
			return
		}
		fmt.Printf("health %s\n", reply.GetStatus())
		fmt.Println("status OK")
		return
	}
	request, err := hex.DecodeString(*payload)
	if err != nil {
		panic(err)
	}
	desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
	ctx = metadata.AppendToOutgoingContext(ctx, "x-echo", "from-go")
	var header, trailer metadata.MD
	stream, err := conn.NewStream(ctx, desc, *method,
		grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		panic(err)
	}
	for i := 0; i < *count; i++ {
		message := request
		if err := stream.SendMsg(&message); err != nil {
			break
		}
	}
	stream.CloseSend()
	for {
		var reply []byte
		err := stream.RecvMsg(&reply)
		if err == io.EOF {
			fmt.Printf("header x-server=%v\n", header.Get("x-server"))
			fmt.Printf("trailer x-trailer=%v\n", trailer.Get("x-trailer"))
			fmt.Println("status OK")
			return
		}
		if err != nil {
			fmt.Printf("status %s %s\n", status.Code(err), status.Convert(err).Message())
			return
		}
		fmt.Printf("reply %s\n", hex.EncodeToString(reply))
	}
}

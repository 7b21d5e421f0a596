// grpcpeer: a grpc-go server and client for meshagent's interop tests.
//
//	grpcpeer server -port P -name N   echo any method as raw bytes; health and reflection;
//	                                  SIGTERM stops it gracefully (GracefulStop)
//	grpcpeer client -target HOST:PORT -method /pkg.Svc/M -hex HEX [-health]
//	grpcpeer load -target HOST:PORT -duration S -concurrency C [-size B] [-stream]
//
// The server knows no protos: every unknown method echoes each request message back,
// with header x-server and trailer x-trailer, so a unary, client-, server- or bidi
// streaming call all work. It registers grpc.health.v1 (SERVING) and server reflection
// (which then describes the health service). The client makes one call and prints the
// replies (hex) and the status, for the test to read. The load mode is bench/grpc_proxy.py's load
// generator: unary calls back to back from C goroutines over one connection, or (-stream)
// one bidirectional stream of -size messages; it prints one JSON line of results.
package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
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
	case "load":
		load(os.Args[2:])
	case "h2c":
		h2cServer(os.Args[2:])
	default:
		os.Exit(2)
	}
}

func server(args []string) {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	port := flags.Int("port", 0, "port")
	name := flags.String("name", "go-peer", "server name")
	maxAge := flags.Duration("max-age", 0, "close each connection this long after it opened, with GOAWAY (0: never)")
	maxStreams := flags.Uint("max-streams", 0, "SETTINGS_MAX_CONCURRENT_STREAMS per connection (0: grpc-go's default)")
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
	options := []grpc.ServerOption{grpc.UnknownServiceHandler(echo)}
	if *maxStreams > 0 {
		options = append(options, grpc.MaxConcurrentStreams(uint32(*maxStreams)))
	}
	if *maxAge > 0 {
		// grpc-go's own rolling of connections: GOAWAY, the calls in flight finish.
		options = append(options, grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge: *maxAge, MaxConnectionAgeGrace: 10 * time.Second,
		}))
	}
	s := grpc.NewServer(options...)
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
	// SIGTERM: grpc-go's graceful stop, as a deployment's stop would do it: GOAWAY to every
	// connection, no new calls, the calls in flight finish, then the process exits.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	go func() {
		<-stop
		s.GracefulStop()
	}()
	fmt.Printf("go peer ready on %d\n", listener.Addr().(*net.TCPAddr).Port)
	if err := s.Serve(listener); err != nil {
		panic(err)
	}
}

// h2cServer answers every HTTP/2 request (prior knowledge, no TLS) with 200 and a short
// body, after reading the request's: the plain HTTP/2 peer behind the agent when h2spec
// runs against the gRPC listener (x/net/http2, the Go standard library's HTTP/2).
func h2cServer(args []string) {
	flags := flag.NewFlagSet("h2c", flag.ExitOnError)
	port := flags.Int("port", 0, "port")
	flags.Parse(args)
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		panic(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "text/plain")
		w.Write([]byte("ok\n"))
	})
	server := &http2.Server{}
	fmt.Printf("go peer ready on %d\n", listener.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := listener.Accept()
		if err != nil {
			panic(err)
		}
		go server.ServeConn(conn, &http2.ServeConnOpts{Handler: handler})
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

func load(args []string) {
	flags := flag.NewFlagSet("load", flag.ExitOnError)
	target := flags.String("target", "", "host:port")
	duration := flags.Float64("duration", 5, "seconds")
	concurrency := flags.Int("concurrency", 16, "calls in flight")
	size := flags.Int("size", 16, "request message bytes")
	streaming := flags.Bool("stream", false, "one bidi stream: throughput instead of calls")
	flags.Parse(args)
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	payload := make([]byte, *size)
	end := time.Now().Add(time.Duration(*duration * float64(time.Second)))
	started := time.Now()
	if *streaming {
		stream, err := conn.NewStream(context.Background(),
			&grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/bench.Echo/Stream")
		if err != nil {
			panic(err)
		}
		received := make(chan int64)
		go func() {
			var total int64
			for {
				var reply []byte
				if err := stream.RecvMsg(&reply); err != nil {
					received <- total
					return
				}
				total += int64(len(reply))
			}
		}()
		for time.Now().Before(end) {
			message := payload
			if err := stream.SendMsg(&message); err != nil {
				panic(err)
			}
		}
		stream.CloseSend()
		total := <-received
		elapsed := time.Since(started).Seconds()
		fmt.Printf("{\"bytes\": %d, \"seconds\": %.3f, \"mb_per_s\": %.1f}\n",
			total, elapsed, float64(total)/elapsed/1e6)
		return
	}
	results := make(chan []time.Duration, *concurrency)
	errors := make(chan int, *concurrency)
	for w := 0; w < *concurrency; w++ {
		go func() {
			var latencies []time.Duration
			failed := 0
			for time.Now().Before(end) {
				request, reply := payload, []byte(nil)
				t := time.Now()
				err := conn.Invoke(context.Background(), "/bench.Echo/Unary", &request, &reply)
				if err != nil {
					if failed == 0 {
						fmt.Fprintln(os.Stderr, "call failed:", err)
					}
					failed++
					continue
				}
				latencies = append(latencies, time.Since(t))
			}
			results <- latencies
			errors <- failed
		}()
	}
	var all []time.Duration
	failed := 0
	for w := 0; w < *concurrency; w++ {
		all = append(all, <-results...)
		failed += <-errors
	}
	elapsed := time.Since(started).Seconds()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds())
	}
	fmt.Printf("{\"calls\": %d, \"errors\": %d, \"seconds\": %.3f, \"rate\": %.1f, \"p50_us\": %.0f, \"p99_us\": %.0f}\n",
		len(all), failed, elapsed, float64(len(all))/elapsed, pct(0.50), pct(0.99))
}

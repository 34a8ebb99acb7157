// Command berth-bench-client is the benchmark's client of berth's
// plugin.v1alpha service, written with grpc-go like Forgejo Runner, so that
// what the benchmark measures is the daemon plus the cost a real runner pays,
// not the cost of berth's own Node client.
//
// One operation per invocation; its result is one JSON object on stdout, and
// a failure is a message on stderr and exit code 1 (2 for a bad command line):
//
//	berth-bench-client -addr ADDR exec -env ID [-workdir DIR] -- CMD ARGS...
//	berth-bench-client -addr ADDR latency -env ID -warmup W -n N -- CMD ARGS...
//	berth-bench-client -addr ADDR copyin -env ID -dest PATH -dir SRC -name NAME
//	berth-bench-client -addr ADDR copyout -env ID -src PATH
//
// ADDR is what berth prints: unix:/path, unix:///path, tcp://host:port or host:port.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	pb "berth/bench/go-client/gen/plugin/v1alpha"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// usageError is a bad command line: exit code 2 rather than 1.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// operation runs one subcommand on a connection that has passed its health
// check and returns what is printed as JSON.
type operation func(ctx context.Context, client pb.BackendPluginClient) (jsonResult, error)

// jsonResult is an operation's JSON result; every one also tells the CPU this
// process used, so that the benchmark can charge the client per call.
type jsonResult interface{ setCPUSeconds(float64) }

// cost is the part of every result that run fills in.
type cost struct {
	CPUSeconds float64 `json:"cpuSeconds"`
}

func (c *cost) setCPUSeconds(s float64) { c.CPUSeconds = s }

// cpuSeconds is this process's user and system CPU so far.
func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	seconds := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return seconds(usage.Utime) + seconds(usage.Stime)
}

func main() {
	err := run(os.Args[1:])
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "berth-bench-client: %v\n", err)
	if errors.As(err, new(usageError)) {
		os.Exit(2)
	}
	os.Exit(1)
}

func run(args []string) error {
	global := flag.NewFlagSet("berth-bench-client", flag.ContinueOnError)
	addr := global.String("addr", "", "berth's address: unix:/path, unix:///path, tcp://host:port or host:port")
	timeout := global.Duration("timeout", 10*time.Minute, "deadline of the whole invocation, dial included")
	cpuProfile := global.String("cpuprofile", "", "write a pprof CPU profile of the invocation to this file")
	if err := global.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if *cpuProfile != "" {
		stop, err := startProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *addr == "" || global.NArg() == 0 {
		return usagef("usage: berth-bench-client -addr ADDR {exec|latency|copyin|copyout} [flags] [-- CMD...]")
	}
	op, err := parseOperation(global.Arg(0), global.Args()[1:])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := dial(ctx, *addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	out, err := op(ctx, pb.NewBackendPluginClient(conn))
	if err != nil {
		return err
	}
	out.setCPUSeconds(cpuSeconds())
	return json.NewEncoder(os.Stdout).Encode(out)
}

// parseOperation reads a subcommand's flags; everything after `--` is the command of exec and latency.
func parseOperation(name string, args []string) (operation, error) {
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	env := flags.String("env", "", "environment id")
	var op operation
	var err error
	switch name {
	case "exec":
		request := execFlags(flags)
		err = parseWithCommand(flags, args, request)
		op = func(ctx context.Context, c pb.BackendPluginClient) (jsonResult, error) {
			request.EnvironmentId = *env
			return execOnce(ctx, c, request)
		}
	case "latency":
		request := execFlags(flags)
		warmup := flags.Int("warmup", 0, "untimed runs first")
		n := flags.Int("n", 1, "timed runs")
		if err = parseWithCommand(flags, args, request); err == nil && (*warmup < 0 || *n < 1) {
			err = usagef("latency needs -warmup >= 0 and -n >= 1")
		}
		op = func(ctx context.Context, c pb.BackendPluginClient) (jsonResult, error) {
			request.EnvironmentId = *env
			return latency(ctx, c, request, *warmup, *n)
		}
	case "copyin":
		dest := flags.String("dest", "", "directory in the environment to unpack into")
		dir := flags.String("dir", "", "local directory to send")
		entry := flags.String("name", "", "name of that directory in the tar (and so under -dest)")
		if err = parseFlagsOnly(flags, args); err == nil && (*dest == "" || *dir == "" || *entry == "") {
			err = usagef("copyin needs -dest, -dir and -name")
		}
		op = func(ctx context.Context, c pb.BackendPluginClient) (jsonResult, error) {
			return copyIn(ctx, c, *env, *dest, *dir, *entry)
		}
	case "copyout":
		src := flags.String("src", "", "path in the environment to fetch")
		if err = parseFlagsOnly(flags, args); err == nil && *src == "" {
			err = usagef("copyout needs -src")
		}
		op = func(ctx context.Context, c pb.BackendPluginClient) (jsonResult, error) {
			return copyOut(ctx, c, *env, *src)
		}
	default:
		return nil, usagef("unknown operation %q: exec, latency, copyin or copyout", name)
	}
	if err == nil && *env == "" {
		err = usagef("%s needs -env", name)
	}
	return op, err
}

// execFlags adds the flags of an ExecRequest to flags; the request is complete once they are parsed.
func execFlags(flags *flag.FlagSet) *pb.ExecRequest {
	request := &pb.ExecRequest{Env: map[string]string{}}
	flags.StringVar(&request.Workdir, "workdir", "", "working directory of the command (default: the environment's)")
	flags.Func("setenv", "KEY=VALUE in the command's environment (repeatable)", func(value string) error {
		key, val, ok := strings.Cut(value, "=")
		if !ok || key == "" {
			return fmt.Errorf("%q is not KEY=VALUE", value)
		}
		request.Env[key] = val
		return nil
	})
	return request
}

// parseWithCommand parses flags up to `--`; what follows is the request's command.
func parseWithCommand(flags *flag.FlagSet, args []string, request *pb.ExecRequest) error {
	if err := flags.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if flags.NArg() == 0 {
		return usagef("%s needs a command after --", flags.Name())
	}
	request.Command = flags.Args()
	return nil
}

func parseFlagsOnly(flags *flag.FlagSet, args []string) error {
	if err := flags.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if flags.NArg() > 0 {
		return usagef("%s takes no arguments, got %q", flags.Name(), flags.Args())
	}
	return nil
}

// grpcTarget turns berth's address forms into grpc-go targets. unix:// paths
// are made absolute, because grpc-go reads unix://./x as an authority.
func grpcTarget(addr string) (string, error) {
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return "", usagef("address %q has no socket path", addr)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", err
		}
		return "unix://" + abs, nil
	}
	hostPort := strings.TrimPrefix(addr, "tcp://")
	return "passthrough:///" + hostPort, nil
}

// dial connects the way Forgejo Runner does (plaintext, 32 MiB messages,
// keepalive pings every 30 s) and, like the runner, requires the standard
// health service to say SERVING before anything else is called.
func dial(ctx context.Context, addr string) (*grpc.ClientConn, error) {
	target, err := grpcTarget(addr)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20), grpc.MaxCallSendMsgSize(32<<20)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("health check of %s: %w", addr, err)
	}
	if health.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		conn.Close()
		return nil, fmt.Errorf("health check of %s: %s, not SERVING", addr, health.GetStatus())
	}
	return conn, nil
}

// startProfile profiles this process's CPU until the returned function is
// called: to see where the client's own cost goes (`go tool pprof`).
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

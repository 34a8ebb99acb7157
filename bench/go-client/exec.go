package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	pb "berth/bench/go-client/gen/plugin/v1alpha"
	"google.golang.org/grpc"
)

type execResult struct {
	ExitCode    int32   `json:"exitCode"`
	StdoutBytes int64   `json:"stdoutBytes"`
	StderrBytes int64   `json:"stderrBytes"`
	Seconds     float64 `json:"seconds"`
	cost
}

type latencyResult struct {
	Ms []float64 `json:"ms"`
	cost
}

// execStream reads one Exec call's stream. The message is reused, so reading
// costs only what grpc-go's decoding allocates; the output is counted and dropped.
type execStream struct {
	stream grpc.ServerStreamingClient[pb.ExecOutput]
	msg    pb.ExecOutput
	res    execResult
}

// untilComplete reads up to the ExecComplete message and records its exit code.
func (s *execStream) untilComplete() error {
	for {
		if err := s.stream.RecvMsg(&s.msg); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("exec stream ended without ExecComplete or ExecFailed")
			}
			return fmt.Errorf("exec: %w", err)
		}
		switch out := s.msg.Output.(type) {
		case *pb.ExecOutput_Data:
			if out.Data.GetStream() == pb.DataChunk_STDERR {
				s.res.StderrBytes += int64(len(out.Data.GetData()))
			} else {
				s.res.StdoutBytes += int64(len(out.Data.GetData()))
			}
		case *pb.ExecOutput_ExecComplete:
			s.res.ExitCode = out.ExecComplete.GetExitCode()
			return nil
		case *pb.ExecOutput_ExecFailed:
			return fmt.Errorf("exec failed: %s", out.ExecFailed.GetErrorMessage())
		default:
			return errors.New("exec stream sent an empty message")
		}
	}
}

// toEnd reads what follows ExecComplete: nothing, then the call's status, which must be OK.
func (s *execStream) toEnd() error {
	err := s.stream.RecvMsg(&s.msg)
	if err == nil {
		return errors.New("exec stream sent a message after ExecComplete")
	}
	if !errors.Is(err, io.EOF) {
		return fmt.Errorf("exec, after ExecComplete: %w", err)
	}
	return nil
}

// execCall runs one Exec and reads it to ExecComplete; `elapsed` is the time
// from the call to ExecComplete. Then it reads the stream to its end.
func execCall(ctx context.Context, client pb.BackendPluginClient, req *pb.ExecRequest) (execResult, time.Duration, error) {
	started := time.Now()
	stream, err := client.Exec(ctx, req)
	if err != nil {
		return execResult{}, 0, fmt.Errorf("exec: %w", err)
	}
	s := execStream{stream: stream}
	if err := s.untilComplete(); err != nil {
		return s.res, 0, err
	}
	elapsed := time.Since(started)
	return s.res, elapsed, s.toEnd()
}

func execOnce(ctx context.Context, client pb.BackendPluginClient, req *pb.ExecRequest) (jsonResult, error) {
	started := time.Now()
	res, _, err := execCall(ctx, client, req)
	if err != nil {
		return nil, err
	}
	// The whole call, its end of stream included.
	res.Seconds = time.Since(started).Seconds()
	return &res, nil
}

// latency runs `warmup` untimed and then `n` timed Execs one after another on
// this one connection; each must exit 0.
func latency(ctx context.Context, client pb.BackendPluginClient, req *pb.ExecRequest, warmup, n int) (jsonResult, error) {
	ms := make([]float64, 0, n)
	for i := range warmup + n {
		res, elapsed, err := execCall(ctx, client, req)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		if res.ExitCode != 0 {
			return nil, fmt.Errorf("run %d: the command exited with %d", i+1, res.ExitCode)
		}
		if i >= warmup {
			ms = append(ms, float64(elapsed.Nanoseconds())/1e6)
		}
	}
	return &latencyResult{Ms: ms}, nil
}

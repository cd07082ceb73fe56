// Command aws-go-app is an application written the way most Go services use
// AWS: config.LoadDefaultConfig and a service client, with nothing specific
// to tempcreds. The end-to-end tests run it in an injected pod to prove that
// the credentials tempcreds delivers work with the Go SDK's default chain.
//
// Each iteration retrieves credentials (cfg.Credentials.Retrieve, which
// refreshes them when they expire) and calls sts:GetCallerIdentity, then
// prints one JSON line to stdout:
//
//	{"n":1,"ok":true,"arn":"...","account":"...","source":"...","access_key_id_prefix":"ASIA","expires":"2030-01-01T00:00:00Z"}
//	{"n":2,"ok":false,"error":"..."}
//
// It never prints a secret access key or a session token; only the first
// four characters of the access key id (ASIA for temporary credentials,
// AKIA for long-term keys).
//
// The SDK itself honours AWS_ENDPOINT_URL_STS and AWS_ENDPOINT_URL (see
// resolveBaseEndpoint in service/sts/endpoints.go and config's env_config.go),
// so tests point it at a local STS server with those variables.
//
// Exit status: 0 when the last iteration succeeded, 1 otherwise, 2 for bad
// flags. SIGTERM and SIGINT end the loop after the current iteration.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// success is the line printed for an iteration that worked.
type success struct {
	N                 int    `json:"n"`
	OK                bool   `json:"ok"`
	Arn               string `json:"arn"`
	Account           string `json:"account"`
	Source            string `json:"source"`
	AccessKeyIDPrefix string `json:"access_key_id_prefix"`
	Expires           string `json:"expires"`
}

// failure is the line printed for an iteration that failed.
type failure struct {
	N     int    `json:"n"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// options are the command line, each flag defaulting to an environment
// variable so a pod spec can set it without changing the command.
type options struct {
	count       int
	interval    time.Duration
	exitOnError bool
	timeout     time.Duration
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("aws-go-app", flag.ContinueOnError)
	fs.IntVar(&o.count, "count", envInt("AWS_GO_APP_COUNT", 1), "iterations, 0 for forever (env AWS_GO_APP_COUNT)")
	fs.DurationVar(&o.interval, "interval", envDuration("AWS_GO_APP_INTERVAL", 5*time.Second), "pause between iterations (env AWS_GO_APP_INTERVAL)")
	fs.BoolVar(&o.exitOnError, "exit-on-error", os.Getenv("AWS_GO_APP_EXIT_ON_ERROR") == "true", "stop at the first failed iteration (env AWS_GO_APP_EXIT_ON_ERROR=true)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "limit of one iteration")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.count < 0 {
		return o, fmt.Errorf("-count %d: must be 0 (forever) or more", o.count)
	}
	if o.interval < 0 {
		return o, fmt.Errorf("-interval %s: must not be negative", o.interval)
	}
	return o, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func main() {
	opts, err := parseOptions(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "aws-go-app:", err)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, opts))
}

// run loops and returns the exit status.
func run(ctx context.Context, opts options) int {
	// Loading the configuration fails only on a malformed shared config or
	// environment; that is reported as the first iteration's error.
	cfg, loadErr := config.LoadDefaultConfig(ctx)
	if loadErr == nil && cfg.Region == "" {
		// STS has a global endpoint; pods without AWS_REGION still work.
		cfg.Region = "us-east-1"
	}
	var client *sts.Client
	if loadErr == nil {
		client = sts.NewFromConfig(cfg)
	}

	lastOK := false
	for n := 1; opts.count == 0 || n <= opts.count; n++ {
		var line any
		if loadErr != nil {
			line = failure{N: n, Error: "load config: " + loadErr.Error()}
		} else {
			line = iteration(ctx, cfg, client, n, opts.timeout)
		}
		_, lastOK = line.(success)
		out, _ := json.Marshal(line)
		fmt.Println(string(out))
		if !lastOK && opts.exitOnError {
			break
		}
		if opts.count != 0 && n == opts.count {
			break
		}
		select {
		case <-ctx.Done():
			return status(lastOK)
		case <-time.After(opts.interval):
		}
	}
	return status(lastOK)
}

func status(ok bool) int {
	if ok {
		return 0
	}
	return 1
}

// iteration retrieves credentials and calls GetCallerIdentity once.
func iteration(ctx context.Context, cfg aws.Config, client *sts.Client, n int, timeout time.Duration) any {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if cfg.Credentials == nil {
		return failure{N: n, Error: "no credential provider configured"}
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return failure{N: n, Error: "retrieve credentials: " + err.Error()}
	}
	id, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return failure{N: n, Error: "GetCallerIdentity: " + err.Error()}
	}
	expires := ""
	if creds.CanExpire {
		expires = creds.Expires.UTC().Format(time.RFC3339)
	}
	prefix := creds.AccessKeyID
	if len(prefix) > 4 {
		prefix = prefix[:4]
	}
	return success{
		N:                 n,
		OK:                true,
		Arn:               aws.ToString(id.Arn),
		Account:           aws.ToString(id.Account),
		Source:            creds.Source,
		AccessKeyIDPrefix: prefix,
		Expires:           expires,
	}
}

package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The timing of the topologies below: a primary is taken for dead after
// about a second without an answer, so a test sees a failover within a few
// seconds. Production settings are tens of seconds; the mechanism is the
// same.
const (
	clusterNodeTimeout = 1000 * time.Millisecond
	sentinelDownAfter  = 1000 * time.Millisecond
	sentinelFailover   = 5000 * time.Millisecond
	topologyReady      = 30 * time.Second
)

// RedisCLIPath returns the redis-cli binary to use: $REDIS_CLI if set, else
// the one on PATH (Debian's redis-tools, which redis-server depends on).
func RedisCLIPath() (string, error) {
	if p := os.Getenv("REDIS_CLI"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-cli")
	if err != nil {
		return "", errors.New("redis-cli not found on PATH: run `make test` (it installs the Debian package redis-server, which brings redis-tools) or `apt-get install -y redis-tools`")
	}
	return p, nil
}

// RedisSentinelPath returns the redis-sentinel binary to use:
// $REDIS_SENTINEL if set, else the one on PATH.
func RedisSentinelPath() (string, error) {
	if p := os.Getenv("REDIS_SENTINEL"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-sentinel")
	if err != nil {
		return "", errors.New("redis-sentinel not found on PATH: run `make test` (it installs the Debian package redis-sentinel) or `apt-get install -y redis-sentinel`")
	}
	return p, nil
}

// RedisCluster is a Redis Cluster of redis-server processes owned by one
// test: every node on a free loopback port, persistence off.
type RedisCluster struct {
	// Nodes are the servers; at the start the first ones are the primaries
	// and each of the others replicates one of them, but a failover swaps
	// roles.
	Nodes []*Redis
}

// StartRedisCluster starts primaries primary nodes, each with replicas
// replicas (so a primary that dies can fail over), has redis-cli join them
// into one cluster with the slots spread over the primaries, and waits
// until every node reports the cluster ok and every replica is in sync. The
// nodes stop when tb ends. It fails tb if the cluster cannot form.
func StartRedisCluster(tb testing.TB, primaries, replicas int) *RedisCluster {
	tb.Helper()
	if primaries < 3 {
		tb.Fatalf("StartRedisCluster: redis-cli needs at least 3 primaries, got %d", primaries)
	}
	cli, err := RedisCLIPath()
	if err != nil {
		tb.Fatal(err)
	}
	bin, err := RedisServerPath()
	if err != nil {
		tb.Fatal(err)
	}
	c := &RedisCluster{}
	n := primaries * (1 + replicas)
	for i := range n {
		dir := filepath.Join(tb.TempDir(), "node"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		r, err := startOnFreePort(func(port int) *Redis {
			// The cluster bus listens on a port of its own, by default
			// port+10000, which may lie in the ephemeral range: pick it too.
			bus, err := FreePort()
			if err != nil {
				bus = 0 // redis-server then fails to start, and says why
			}
			return &Redis{bin: bin, dir: dir, port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), opts: RedisOptions{Args: []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
				"--cluster-port", strconv.Itoa(bus),
			}}}
		})
		if err != nil {
			tb.Fatalf("starting cluster node %d: %v", i, err)
		}
		tb.Cleanup(r.Stop)
		c.Nodes = append(c.Nodes, r)
	}
	args := []string{"--cluster", "create"}
	for _, r := range c.Nodes {
		args = append(args, r.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(tb.Context(), topologyReady)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.waitReady(ctx, primaries); err != nil {
		tb.Fatalf("Redis Cluster of %d nodes: %v", n, err)
	}
	return c
}

// URL returns the cluster's REDIS_URL: the first node, with every other node
// as an addr parameter (go-redis ParseClusterURL).
func (c *RedisCluster) URL() string {
	q := url.Values{}
	for _, r := range c.Nodes[1:] {
		q.Add("addr", r.Addr)
	}
	return (&url.URL{Scheme: "redis", Host: c.Nodes[0].Addr, RawQuery: q.Encode()}).String()
}

// waitReady waits until every running node says cluster_state:ok, sees
// want primaries that cover every slot, and every replica's link to its
// primary is up.
func (c *RedisCluster) waitReady(ctx context.Context, want int) error {
	var last error
	for {
		if last = c.ready(ctx, want); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *RedisCluster) ready(ctx context.Context, want int) error {
	for _, r := range c.Nodes {
		if r.Pid() == 0 {
			continue
		}
		info, err := r.clusterInfo(ctx)
		if err != nil {
			return err
		}
		if info["cluster_state"] != "ok" || info["cluster_size"] != strconv.Itoa(want) {
			return fmt.Errorf("%s: cluster_state %s, cluster_size %s", r.Addr, info["cluster_state"], info["cluster_size"])
		}
		repl, err := r.info(ctx, "replication")
		if err != nil {
			return err
		}
		if repl["role"] == "slave" && repl["master_link_status"] != "up" {
			return fmt.Errorf("%s: replica's link to its primary %s", r.Addr, repl["master_link_status"])
		}
	}
	return nil
}

// PrimaryOf returns the node that serves key now, as a running node sees it.
func (c *RedisCluster) PrimaryOf(ctx context.Context, key string) (*Redis, error) {
	var errs []error
	for _, r := range c.Nodes {
		if r.Pid() == 0 {
			continue
		}
		addr, err := r.slotOwner(ctx, key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range c.Nodes {
			if n.Addr == addr {
				return n, nil
			}
		}
		return nil, fmt.Errorf("slot of %q served by %s, not a node of the cluster", key, addr)
	}
	return nil, fmt.Errorf("no node answers: %w", errors.Join(errs...))
}

// WaitPromoted waits until the slot of key is served by a running node
// other than old, and every running node says the cluster is ok again, and
// returns that node.
func (c *RedisCluster) WaitPromoted(ctx context.Context, key string, old *Redis) (*Redis, error) {
	for {
		p, err := c.PrimaryOf(ctx, key)
		if err == nil && p != old && p.Pid() != 0 {
			if err = c.allOK(ctx); err == nil {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no replica of %s promoted: %v", old.Addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *RedisCluster) allOK(ctx context.Context) error {
	for _, r := range c.Nodes {
		if r.Pid() == 0 {
			continue
		}
		info, err := r.clusterInfo(ctx)
		if err != nil {
			return err
		}
		if info["cluster_state"] != "ok" {
			return fmt.Errorf("%s: cluster_state %s", r.Addr, info["cluster_state"])
		}
	}
	return nil
}

// RedisSentinel is a primary, its replicas and the Sentinels that watch
// them, owned by one test: every process on a free loopback port,
// persistence off.
type RedisSentinel struct {
	// MasterName is the name the Sentinels know the primary by.
	MasterName string
	// Servers are the data servers; the first is the primary at the start.
	Servers []*Redis
	// Sentinels are the redis-sentinel processes.
	Sentinels []*Redis
}

// StartRedisSentinel starts a primary, replicas replicas of it and
// sentinels Sentinels watching it (quorum: a majority of them), and waits
// until every Sentinel knows every replica and every other Sentinel, so
// that a failover can happen. Everything stops when tb ends. It fails tb if
// the setup does not come together.
func StartRedisSentinel(tb testing.TB, replicas, sentinels int) *RedisSentinel {
	tb.Helper()
	sbin, err := RedisSentinelPath()
	if err != nil {
		tb.Fatal(err)
	}
	s := &RedisSentinel{MasterName: "mymaster"}
	primary := StartRedis(tb)
	s.Servers = append(s.Servers, primary)
	for range replicas {
		r := StartRedisWith(tb, RedisOptions{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.port)}})
		s.Servers = append(s.Servers, r)
	}
	quorum := sentinels/2 + 1
	for i := range sentinels {
		dir := filepath.Join(tb.TempDir(), "sentinel"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		r, err := startOnFreePort(func(port int) *Redis {
			conf := filepath.Join(dir, "sentinel.conf")
			// Sentinel rewrites its file (its ID, what it learnt), so each
			// start on a new port begins from a fresh one.
			text := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d %[3]d\n"+
				"sentinel down-after-milliseconds %[1]s %[4]d\n"+
				"sentinel failover-timeout %[1]s %[5]d\n"+
				"sentinel parallel-syncs %[1]s 1\n",
				s.MasterName, primary.port, quorum, sentinelDownAfter.Milliseconds(), sentinelFailover.Milliseconds())
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				tb.Errorf("writing %s: %v", conf, err)
			}
			return &Redis{bin: sbin, dir: dir, port: port, conf: conf, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		})
		if err != nil {
			tb.Fatalf("starting sentinel %d: %v", i, err)
		}
		tb.Cleanup(r.Stop)
		s.Sentinels = append(s.Sentinels, r)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), topologyReady)
	defer cancel()
	var last error
	for {
		if last = s.ready(ctx, replicas); last == nil {
			return s
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("Sentinel setup not ready after %v: %v", topologyReady, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *RedisSentinel) ready(ctx context.Context, replicas int) error {
	for _, r := range s.Servers[1:] {
		repl, err := r.info(ctx, "replication")
		if err != nil {
			return err
		}
		if repl["master_link_status"] != "up" {
			return fmt.Errorf("replica %s: link to the primary %s", r.Addr, repl["master_link_status"])
		}
	}
	for _, sn := range s.Sentinels {
		m, err := sn.sentinelMaster(ctx, s.MasterName)
		if err != nil {
			return err
		}
		if m["num-slaves"] != strconv.Itoa(replicas) || m["num-other-sentinels"] != strconv.Itoa(len(s.Sentinels)-1) || m["flags"] != "master" {
			return fmt.Errorf("sentinel %s: flags %s, %s replicas, %s other sentinels", sn.Addr, m["flags"], m["num-slaves"], m["num-other-sentinels"])
		}
	}
	return nil
}

// URL returns the setup's REDIS_URL: the first Sentinel, the others as addr
// parameters, and master_name (go-redis ParseFailoverURL).
func (s *RedisSentinel) URL() string {
	q := url.Values{"master_name": {s.MasterName}}
	for _, r := range s.Sentinels[1:] {
		q.Add("addr", r.Addr)
	}
	return (&url.URL{Scheme: "redis", Host: s.Sentinels[0].Addr, RawQuery: q.Encode()}).String()
}

// Primary returns the server the first Sentinel that answers calls the
// primary.
func (s *RedisSentinel) Primary(ctx context.Context) (*Redis, error) {
	var errs []error
	for _, sn := range s.Sentinels {
		if sn.Pid() == 0 {
			continue
		}
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, DialTimeout: time.Second, ReadTimeout: time.Second})
		addr, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
		c.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hp := net.JoinHostPort(addr[0], addr[1])
		for _, r := range s.Servers {
			if r.Addr == hp {
				return r, nil
			}
		}
		return nil, fmt.Errorf("sentinel %s names %s, not a server of the setup", sn.Addr, hp)
	}
	return nil, fmt.Errorf("no sentinel answers: %w", errors.Join(errs...))
}

// WaitPromoted waits until the Sentinels name a running primary other than
// old, and that server says it is a primary, and returns it.
func (s *RedisSentinel) WaitPromoted(ctx context.Context, old *Redis) (*Redis, error) {
	for {
		p, err := s.Primary(ctx)
		if err == nil && p != old && p.Pid() != 0 {
			var repl map[string]string
			if repl, err = p.info(ctx, "replication"); err == nil && repl["role"] == "master" {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no replica of %s promoted: %v", old.Addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// client returns a go-redis client of this one server, for the multi-line
// replies [Redis.Do] does not read.
func (r *Redis) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1, DisableIdentity: true})
}

// info returns the fields of one INFO section.
func (r *Redis) info(ctx context.Context, section string) (map[string]string, error) {
	c := r.client()
	defer c.Close()
	text, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("%s: INFO %s: %w", r.Addr, section, err)
	}
	return fields(text), nil
}

// clusterInfo returns the fields of CLUSTER INFO.
func (r *Redis) clusterInfo(ctx context.Context) (map[string]string, error) {
	c := r.client()
	defer c.Close()
	text, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER INFO: %w", r.Addr, err)
	}
	return fields(text), nil
}

// fields parses the field:value lines of INFO and CLUSTER INFO.
func fields(text string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(text) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// slotOwner returns the address of the primary this node says serves key.
func (r *Redis) slotOwner(ctx context.Context, key string) (string, error) {
	c := r.client()
	defer c.Close()
	slot, err := c.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return "", fmt.Errorf("%s: CLUSTER KEYSLOT: %w", r.Addr, err)
	}
	shards, err := c.ClusterShards(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("%s: CLUSTER SHARDS: %w", r.Addr, err)
	}
	for _, sh := range shards {
		for _, rg := range sh.Slots {
			if rg.Start > slot || slot > rg.End {
				continue
			}
			for _, n := range sh.Nodes {
				// A dead primary stays in its shard, marked failed, after
				// its replica took over.
				if n.Role == "master" && n.Health == "online" {
					return net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10)), nil
				}
			}
		}
	}
	return "", fmt.Errorf("%s: no node serves slot %d", r.Addr, slot)
}

// sentinelMaster returns what a Sentinel knows of the primary named name.
func (r *Redis) sentinelMaster(ctx context.Context, name string) (map[string]string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: r.Addr, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	m, err := c.Master(ctx, name).Result()
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: SENTINEL MASTER %s: %w", r.Addr, name, err)
	}
	return m, nil
}

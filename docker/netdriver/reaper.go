package netdriver

import (
	"context"
	"sync"
)

// reaper deletes left endpoints' veths after Leave has answered. Deleting
// a network device waits for the kernel's RCU grace periods (16-45 ms on
// the benchmark machine, the largest part of a docker run's plugin time),
// and nothing Docker does next needs the veth gone. Until it is, the name
// is pending: Join of a veth of that name waits for it, and repair does not
// mistake it for a running endpoint that lost its record.
type reaper struct {
	mu      sync.Mutex
	running bool
	queue   []string
	pending map[string]chan struct{} // host veth -> closed once deleted
	wake    chan struct{}
}

func newReaper() *reaper {
	return &reaper{pending: map[string]chan struct{}{}, wake: make(chan struct{}, 1)}
}

// removeVeth deletes the endpoint's veth: in the background while RunReaper
// runs, else at once. A veth left to the reaper is set down first, which
// takes its routes with it: DeleteEndpoint frees the addresses right after,
// and another host's new container may hold one before the veth is gone.
func (d *Driver) removeVeth(name string) error {
	r := d.reap
	r.mu.Lock()
	if !r.running {
		r.mu.Unlock()
		return d.dp.TeardownEndpoint(name, nil)
	}
	r.mu.Unlock()
	if err := d.dp.DownEndpoint(name); err != nil {
		return err
	}
	r.mu.Lock()
	if _, ok := r.pending[name]; !ok {
		r.pending[name] = make(chan struct{})
		r.queue = append(r.queue, name)
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// isPending says whether the veth is queued or being deleted.
func (r *reaper) isPending(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pending[name]
	return ok
}

// waitGone returns once a pending deletion of the veth is done, and
// whether there was one.
func (r *reaper) waitGone(ctx context.Context, name string) (bool, error) {
	r.mu.Lock()
	ch := r.pending[name]
	r.mu.Unlock()
	if ch == nil {
		return false, nil
	}
	select {
	case <-ch:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// RunReaper deletes the veths Leave and DeleteEndpoint hand it until ctx
// ends, then the rest at once; from then on they delete at once again.
func (d *Driver) RunReaper(ctx context.Context) {
	r := d.reap
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			if ctx.Err() != nil {
				r.running = false
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-r.wake:
			}
			continue
		}
		name := r.queue[0]
		r.queue = r.queue[1:]
		r.mu.Unlock()
		if err := d.dp.TeardownEndpoint(name, nil); err != nil {
			// The garbage collector removes it once the engine confirms
			// the endpoint is gone.
			d.log.Warn("removing a left endpoint's veth failed", "hostIface", name, "err", err)
		}
		r.mu.Lock()
		close(r.pending[name])
		delete(r.pending, name)
		r.mu.Unlock()
	}
}

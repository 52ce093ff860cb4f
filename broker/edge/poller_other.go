//go:build !linux

package edge

// poller needs epoll; elsewhere Run fails with ErrUnsupported.
type poller struct{}

func newPoller(*Edge) (*poller, error)    { return nil, ErrUnsupported }
func (p *poller) add(*conn) error         { return ErrUnsupported }
func (p *poller) setWritable(*conn, bool) {}
func (p *poller) remove(*conn)            {}
func (p *poller) run()                    {}
func (p *poller) stop()                   {}
func (p *poller) close()                  {}

package audit_test

import (
	"context"
	"sync"
	"testing"

	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/audit"
)

func TestRecordUpstream(t *testing.T) {
	t.Parallel()
	// Without a Record (audit log off), setting is harmless.
	audit.SetUpstream(t.Context(), "ignored")
	if r := audit.FromContext(context.Background()); r != nil {
		t.Fatalf("FromContext of a bare context = %v, want nil", r)
	}

	r := &audit.Record{}
	ctx := audit.NewContext(t.Context(), r)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { audit.SetUpstream(ctx, "everything") })
	}
	wg.Wait()
	if got := r.Upstream(); got != "everything" {
		t.Errorf("Upstream() = %q, want %q", got, "everything")
	}
}

package recpath

import "testing"

var benchJobspec = []byte(`{"resources":[{"type":"slot","count":1,"with":[{"type":"core","count":1}],"label":"task"}],"tasks":[{"command":["true"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":0,"cwd":"/tmp/fx","job":{"name":"bulk"},"shell":{"options":{"rlimit":{"cpu":-1,"fsize":-1,"data":-1,"stack":8388608,"core":0,"nofile":20000,"as":-1,"rss":-1,"nproc":96365}}},"queue":"batch"}},"version":1}`)

// The scanner and the automaton on a jobspec of the bulk fixture, under
// the anonymize default profile's jobspec paths.
func BenchmarkScan(b *testing.B) {
	s := mustSet(b, "jobspec.tasks.*.command", "jobspec.tasks.*.environment", "jobspec.attributes.system.cwd", "jobspec.attributes.system.job",
		"jobspec.attributes.system.environment", "jobspec.attributes.system.files", "jobspec.attributes.system.shell", "jobspec.attributes.user",
		"context.*.userid", "context.*.annotations.user", "context.memo", "context.exception.note")
	root, _ := s.Step(s.Start(), "jobspec")
	b.Run("SkipValue", func(b *testing.B) {
		for b.Loop() {
			if _, err := SkipValue(benchJobspec, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Step", func(b *testing.B) {
		for b.Loop() {
			st, _ := s.Step(root, "attributes")
			st, _ = s.Step(st, "system")
			for _, k := range []string{"duration", "cwd", "job", "shell", "queue"} {
				s.Step(st, k)
			}
		}
	})
	b.Run("Prune", func(b *testing.B) {
		p := &Pruner{Exclude: mustSet(b, "attributes.system.shell", "tasks.*.count")}
		for b.Loop() {
			if _, _, err := p.Prune(benchJobspec, Start{Exc: p.Exclude.Start(), KeepAll: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package elasticsearch

// Mappings of the three profiles and the templates Prepare installs.
// Every index gets `dynamic: false`: a field we did not map is kept in
// _source but not indexed, so neither a new record field nor a site's
// odd annotation can grow the mapping (or make a write fail).

type m = map[string]any

var (
	tKeyword = m{"type": "keyword", "ignore_above": 1024}
	tText    = m{"type": "text", "fields": m{"keyword": m{"type": "keyword", "ignore_above": 1024}}}
	tLong    = m{"type": "long"}
	tInt     = m{"type": "integer"}
	tDouble  = m{"type": "double"}
	tBool    = m{"type": "boolean"}
	// Flux times are seconds since the epoch with a fraction
	// (1795394504.6978364); epoch_second takes the fraction.
	tDate     = m{"type": "date", "format": "epoch_second"}
	tDisabled = m{"type": "object", "enabled": false}
	tStored   = m{"type": "text", "index": false}
)

func obj(props m) m { return m{"properties": props} }

// objectMapping is the mapping of a free-form Flux object.
func (c *Config) objectMapping() m {
	switch t := c.objectType(); t {
	case "disabled":
		return tDisabled
	default:
		return m{"type": t}
	}
}

// purgeProps are the fields a purge sets on a job document (every profile).
var purgeProps = m{"purged": tBool, "purged_at": tDate, "purge_reason": tKeyword, "job_key": tKeyword}

func merge(ms ...m) m {
	out := m{}
	for _, x := range ms {
		for k, v := range x {
			out[k] = v
		}
	}
	return out
}

// nativeJob maps core.Job's JSON form (schemas/record.md).
func (c *Config) nativeJob() m {
	return obj(m{
		"id": tKeyword, "jobid": tKeyword, "userid": tLong, "username": tKeyword,
		"urgency": tInt, "priority": tLong,
		"state": tKeyword, "result": tKeyword, "status": tKeyword,
		"name": tKeyword, "cwd": tKeyword, "queue": tKeyword, "project": tKeyword, "bank": tKeyword,
		"ntasks": tLong, "ncores": tLong, "nnodes": tLong,
		"duration": tDouble, "expiration": tDate, "nodelist": tKeyword, "ranks": tKeyword,
		"success": tBool, "waitstatus": tInt, "returncode": tInt,
		"exception": obj(m{"occurred": tBool, "severity": tInt, "type": tKeyword, "note": tText}),
		"t_submit":  tDate, "t_depend": tDate, "t_priority": tDate, "t_sched": tDate,
		"t_run": tDate, "t_cleanup": tDate, "t_inactive": tDate,
		"runtime":      tDouble,
		"dependencies": tKeyword,
		"annotations":  c.objectMapping(),
		"uri":          tKeyword,
		"requested": obj(m{"nnodes": tLong, "nslots": tLong, "slot_cores": tLong, "slot_gpus": tLong,
			"ncores": tLong, "ngpus": tLong, "ntasks": tLong, "exclusive": tBool, "duration": tDouble}),
		"allocated": obj(m{"nnodes": tLong, "ncores": tLong, "ngpus": tLong, "ranks": tKeyword,
			"nodelist": tKeyword, "starttime": tDate, "expiration": tDate}),
	})
}

var derivedProps = obj(m{
	"elapsed": tDouble, "queue_wait": tDouble, "core_hours": tDouble,
	"exit_code": tInt, "exit_signal": tInt, "time_limit": tDouble, "hosts": tKeyword,
})

// mappings is the profile's mapping, shared by the events and jobs
// indices (a jobs document is a subset of an events document plus the
// purge fields).
func (c *Config) mappings() m {
	var props m
	switch c.Profile {
	case "ecs":
		props = m{
			"@timestamp": tDate,
			"event": obj(m{"dataset": tKeyword, "action": tKeyword, "outcome": tKeyword,
				"start": tDate, "end": tDate, "duration": tLong, "duration_seconds": tDouble}),
			"user": obj(m{"name": tKeyword, "id": tKeyword}),
			"host": obj(m{"cluster": tKeyword}),
			"job": obj(m{
				"id": tKeyword, "name": tKeyword, "queue": tKeyword,
				"timelimit": tKeyword, "timelimit_seconds": tDouble,
				"node":       obj(m{"list": tText, "count": tInt, "hosts": tKeyword}),
				"proc":       obj(m{"count": tInt}),
				"cwd":        tText,
				"bank":       tKeyword,
				"urgency":    tKeyword,
				"project":    tKeyword,
				"state":      tKeyword,
				"ntasks":     tLong,
				"priority":   tLong,
				"submittime": tDate, "eligibletime": tDate,
				"exit_code": tInt, "exit_signal": tInt, "returncode": tInt,
				"queue_time": tDouble, "core_hours": tDouble,
				"scheduler":      tKeyword,
				"exception_type": tKeyword, "exception_note": tText, "exception_severity": tInt,
			}),
			"flux": obj(m{"event": obj(m{"context": c.objectMapping()}), "id": tKeyword, "kind": tKeyword}),
		}
	case "slurm":
		props = m{
			"@timestamp": tDate,
			"jobid":      tKeyword, "username": tKeyword, "user_id": tLong,
			"@submit": tDate, "@eligible": tDate, "@start": tDate, "@end": tDate,
			"elapsed": tDouble, "@queue_wait": tDouble,
			"partition": tKeyword, "account": tKeyword, "job_name": tKeyword, "work_dir": tKeyword,
			"wc_key": tKeyword, "nodes": tKeyword, "total_nodes": tLong, "total_cpus": tLong, "ntasks": tLong,
			"time_limit": tDouble, "state": tKeyword, "exit_code": tKeyword, "derived_ec": tKeyword,
			"cpu_hours": tDouble, "cluster": tKeyword,
			"flux_state": tKeyword, "flux_result": tKeyword, "hosts": tKeyword,
			"exception_type": tKeyword, "exception_note": tText,
			"event": tKeyword, "event_context": c.objectMapping(), "flux_id": tKeyword, "flux_kind": tKeyword,
		}
	default: // native: the record's JSON form
		props = m{
			"@timestamp": tDate,
			"kind":       tKeyword, "id": tKeyword, "cluster": tKeyword, "source": tKeyword,
			"event":    obj(m{"timestamp": tDate, "name": tKeyword, "context": c.objectMapping()}),
			"job":      c.nativeJob(),
			"jobspec":  tDisabled,
			"R":        tDisabled,
			"eventlog": tDisabled,
			"purge":    obj(m{"id": tKeyword, "jobid": tKeyword, "reason": tKeyword, "time": tDate}),
			"invalid":  obj(m{"error": tText, "where": tKeyword, "raw": tStored}),
			"derived":  derivedProps,
		}
	}
	return m{"dynamic": false, "properties": merge(props, purgeProps)}
}

// template is one PUT of Prepare.
type template struct {
	path string // e.g. /_component_template/fluxstream-native-mappings
	body m
}

// templates are the component and index templates of the config, in the
// order they must be installed.
func (c *Config) templates() []template {
	name := c.Templates.Name
	meta := m{"managed_by": "fluxstream", "profile": c.Profile}
	settings := func(ilm bool) m {
		s := m{"number_of_shards": c.Templates.Shards}
		if c.Templates.Replicas != nil {
			s["number_of_replicas"] = *c.Templates.Replicas
		}
		if c.Templates.RefreshInterval != "" {
			s["refresh_interval"] = c.Templates.RefreshInterval
		}
		if ilm && c.Templates.ILMPolicy != "" {
			s["index.lifecycle.name"] = c.Templates.ILMPolicy
		}
		return m{"template": m{"settings": s}, "_meta": meta}
	}
	mapName := name + "-" + c.Profile + "-mappings"
	ts := []template{{"/_component_template/" + mapName, m{"template": m{"mappings": c.mappings()}, "_meta": meta}}}
	if c.eventsOn() {
		set := name + "-events-settings"
		it := m{
			"index_patterns": []string{indexPattern(c.Events.Index)},
			"composed_of":    []string{set, mapName},
			"priority":       c.Templates.Priority,
			"_meta":          meta,
		}
		if c.Events.DataStream {
			it["data_stream"] = m{}
		}
		ts = append(ts,
			template{"/_component_template/" + set, settings(true)},
			template{"/_index_template/" + name + "-events", it})
	}
	if c.jobsOn() {
		set := name + "-jobs-settings"
		ts = append(ts,
			template{"/_component_template/" + set, settings(false)},
			template{"/_index_template/" + name + "-jobs", m{
				"index_patterns": []string{c.Jobs.Index},
				"composed_of":    []string{set, mapName},
				// One above the events template, should the patterns overlap.
				"priority": c.Templates.Priority + 1,
				"_meta":    meta,
			}})
	}
	return ts
}

//! OTLP → ClickHouse rows, rendered the way the OpenTelemetry Collector's exporter renders them:
//! ids as lowercase hex, attributes as `Map(String, String)` with non-strings stringified,
//! span kind and status as `Server`/`Error`, timestamps as DateTime64(9) nanoseconds.

use base64::Engine as _;
use clickhouse::Row;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric::Data, number_data_point, summary_data_point::ValueAtQuantile, Exemplar,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use std::hash::{Hash, Hasher};

/// `Map(LowCardinality(String), String)`.
pub type Attrs = Vec<(String, String)>;

/// Renders an attribute value as the collector does (pdata `AsString`).
pub fn value_string(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(other) => json(Some(other)).to_string(),
    }
}

fn json(v: Option<&Value>) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(Value::StringValue(s)) => s.clone().into(),
        Some(Value::BoolValue(b)) => (*b).into(),
        Some(Value::IntValue(i)) => (*i).into(),
        Some(Value::DoubleValue(d)) => (*d).into(),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b).into(),
        Some(Value::ArrayValue(a)) => a.values.iter().map(|v| json(v.value.as_ref())).collect(),
        // An index into a profile dictionary's string table; resolved where the dictionary is known.
        Some(Value::StringValueStrindex(i)) => (*i).into(),
        Some(Value::KvlistValue(kv)) => kv
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    json(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// Attributes as a ClickHouse map.
pub fn attrs(kvs: &[KeyValue]) -> Attrs {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_string(kv.value.as_ref())))
        .collect()
}

fn service_name(resource: Option<&Resource>) -> String {
    value_string(service_value(resource).0)
}

fn hex(b: &[u8]) -> String {
    const_hex::encode(b)
}

fn nanos(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn scope_parts(s: Option<&InstrumentationScope>) -> (String, String, Attrs) {
    s.map_or_else(Default::default, |s| {
        (s.name.clone(), s.version.clone(), attrs(&s.attributes))
    })
}

/// Span kind as the collector writes it.
pub fn span_kind(k: i32) -> &'static str {
    match k {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

/// Status code as the collector writes it.
pub fn status_code(c: i32) -> &'static str {
    match c {
        1 => "Ok",
        2 => "Error",
        _ => "Unset",
    }
}

/// An OTLP attribute list written as `Map(LowCardinality(String), String)` straight from the
/// request: keys and string values are borrowed, only non-string values are rendered.
pub struct AttrMap<'a>(pub &'a [KeyValue]);

impl Serialize for AttrMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for kv in self.0 {
            seq.serialize_element(&(kv.key.as_str(), ValueStr(kv.value.as_ref())))?;
        }
        seq.end()
    }
}

/// An attribute value as the collector renders it, borrowed when it is a string.
#[derive(Clone, Copy)]
pub struct ValueStr<'a>(pub Option<&'a AnyValue>);

impl Serialize for ValueStr<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(v)) => s.serialize_str(v),
            None => s.serialize_str(""),
            Some(_) => s.serialize_str(&value_string(self.0)),
        }
    }
}

/// An id written as lowercase hex without a heap allocation.
pub struct Hex<'a>(pub &'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        match buf.get_mut(..self.0.len() * 2) {
            Some(out) => match const_hex::encode_to_slice(self.0, out)
                .ok()
                .and_then(|()| std::str::from_utf8(out).ok())
            {
                Some(h) => s.serialize_str(h),
                None => s.serialize_str(&hex(self.0)),
            },
            None => s.serialize_str(&hex(self.0)),
        }
    }
}

/// A `Nested` column of a span (one array per sub-column), serialized from the OTLP list.
macro_rules! nested_column {
    ($name:ident, $item:ty, |$x:ident| $value:expr) => {
        /// One sub-column of a `Nested` column, straight from the OTLP list.
        pub struct $name<'a>(pub &'a [$item]);
        impl Serialize for $name<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for $x in self.0 {
                    seq.serialize_element(&$value)?;
                }
                seq.end()
            }
        }
    };
}
nested_column!(EventTimes, Event, |e| nanos(e.time_unix_nano));
nested_column!(EventNames, Event, |e| e.name.as_str());
nested_column!(EventAttrs, Event, |e| AttrMap(&e.attributes));
nested_column!(LinkTraceIds, Link, |l| Hex(&l.trace_id));
nested_column!(LinkSpanIds, Link, |l| Hex(&l.span_id));
nested_column!(LinkStates, Link, |l| l.trace_state.as_str());
nested_column!(LinkAttrs, Link, |l| AttrMap(&l.attributes));

fn service_value(resource: Option<&Resource>) -> ValueStr<'_> {
    ValueStr(
        resource
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref()),
    )
}

fn resource_attrs(resource: Option<&Resource>) -> AttrMap<'_> {
    AttrMap(resource.map_or(&[][..], |r| &r.attributes[..]))
}

/// A row of `otel_traces`, borrowing from the request: building one allocates nothing.
#[derive(Row, Serialize)]
#[allow(non_snake_case)]
pub struct SpanRow<'a> {
    pub Timestamp: i64,
    pub TraceId: Hex<'a>,
    pub SpanId: Hex<'a>,
    pub ParentSpanId: Hex<'a>,
    pub TraceState: &'a str,
    pub SpanName: &'a str,
    pub SpanKind: &'static str,
    pub ServiceName: ValueStr<'a>,
    pub ResourceAttributes: AttrMap<'a>,
    pub ScopeName: &'a str,
    pub ScopeVersion: &'a str,
    pub SpanAttributes: AttrMap<'a>,
    pub Duration: u64,
    pub StatusCode: &'static str,
    pub StatusMessage: &'a str,
    #[serde(rename = "Events.Timestamp")]
    pub events_timestamp: EventTimes<'a>,
    #[serde(rename = "Events.Name")]
    pub events_name: EventNames<'a>,
    #[serde(rename = "Events.Attributes")]
    pub events_attributes: EventAttrs<'a>,
    #[serde(rename = "Links.TraceId")]
    pub links_trace_id: LinkTraceIds<'a>,
    #[serde(rename = "Links.SpanId")]
    pub links_span_id: LinkSpanIds<'a>,
    #[serde(rename = "Links.TraceState")]
    pub links_trace_state: LinkStates<'a>,
    #[serde(rename = "Links.Attributes")]
    pub links_attributes: LinkAttrs<'a>,
}

/// Spans → rows, lazily: the exporter serializes each row as it is made.
pub fn span_rows(req: &ExportTraceServiceRequest) -> impl Iterator<Item = SpanRow<'_>> + Send {
    req.resource_spans.iter().flat_map(|rs| {
        let resource = rs.resource.as_ref();
        // Looked up once per resource, not once per row.
        let service = service_value(resource);
        rs.scope_spans.iter().flat_map(move |ss| {
            let scope = ss.scope.as_ref();
            ss.spans.iter().map(move |s| {
                let status = s.status.as_ref();
                SpanRow {
                    Timestamp: nanos(s.start_time_unix_nano),
                    TraceId: Hex(&s.trace_id),
                    SpanId: Hex(&s.span_id),
                    ParentSpanId: Hex(&s.parent_span_id),
                    TraceState: &s.trace_state,
                    SpanName: &s.name,
                    SpanKind: span_kind(s.kind),
                    ServiceName: service,
                    ResourceAttributes: resource_attrs(resource),
                    ScopeName: scope.map_or("", |sc| sc.name.as_str()),
                    ScopeVersion: scope.map_or("", |sc| sc.version.as_str()),
                    SpanAttributes: AttrMap(&s.attributes),
                    Duration: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
                    StatusCode: status_code(status.map_or(0, |st| st.code)),
                    StatusMessage: status.map_or("", |st| st.message.as_str()),
                    events_timestamp: EventTimes(&s.events),
                    events_name: EventNames(&s.events),
                    events_attributes: EventAttrs(&s.events),
                    links_trace_id: LinkTraceIds(&s.links),
                    links_span_id: LinkSpanIds(&s.links),
                    links_trace_state: LinkStates(&s.links),
                    links_attributes: LinkAttrs(&s.links),
                }
            })
        })
    })
}

/// A row of `otel_logs`, borrowing from the request.
#[derive(Row, Serialize)]
#[allow(non_snake_case)]
pub struct LogRow<'a> {
    pub Timestamp: i64,
    pub TraceId: Hex<'a>,
    pub SpanId: Hex<'a>,
    pub TraceFlags: u8,
    pub SeverityText: &'a str,
    pub SeverityNumber: u8,
    pub ServiceName: ValueStr<'a>,
    pub Body: ValueStr<'a>,
    pub ResourceSchemaUrl: &'a str,
    pub ResourceAttributes: AttrMap<'a>,
    pub ScopeSchemaUrl: &'a str,
    pub ScopeName: &'a str,
    pub ScopeVersion: &'a str,
    pub ScopeAttributes: AttrMap<'a>,
    pub LogAttributes: AttrMap<'a>,
    pub EventName: &'a str,
}

/// Log records → rows, lazily. A record without a timestamp takes its observed time, as the
/// collector does.
pub fn log_rows(req: &ExportLogsServiceRequest) -> impl Iterator<Item = LogRow<'_>> + Send {
    req.resource_logs.iter().flat_map(|rl| {
        let resource = rl.resource.as_ref();
        // Looked up once per resource, not once per row.
        let service = service_value(resource);
        rl.scope_logs.iter().flat_map(move |sl| {
            let scope = sl.scope.as_ref();
            sl.log_records.iter().map(move |l| {
                let ts = if l.time_unix_nano != 0 {
                    l.time_unix_nano
                } else {
                    l.observed_time_unix_nano
                };
                LogRow {
                    Timestamp: nanos(ts),
                    TraceId: Hex(&l.trace_id),
                    SpanId: Hex(&l.span_id),
                    TraceFlags: (l.flags & 0xff) as u8,
                    SeverityText: &l.severity_text,
                    SeverityNumber: u8::try_from(l.severity_number).unwrap_or(0),
                    ServiceName: service,
                    Body: ValueStr(l.body.as_ref()),
                    ResourceSchemaUrl: &rl.schema_url,
                    ResourceAttributes: resource_attrs(resource),
                    ScopeSchemaUrl: &sl.schema_url,
                    ScopeName: scope.map_or("", |sc| sc.name.as_str()),
                    ScopeVersion: scope.map_or("", |sc| sc.version.as_str()),
                    ScopeAttributes: AttrMap(scope.map_or(&[][..], |sc| &sc.attributes[..])),
                    LogAttributes: AttrMap(&l.attributes),
                    EventName: &l.event_name,
                }
            })
        })
    })
}

/// Columns every metric table shares, borrowed from the request: a data point's row copies no
/// attribute or string (resource and scope attributes are written from the request per row).
pub struct MetricCommon<'a> {
    resource_attributes: AttrMap<'a>,
    resource_schema_url: &'a str,
    scope_name: &'a str,
    scope_version: &'a str,
    scope_attributes: AttrMap<'a>,
    scope_dropped_attr_count: u32,
    scope_schema_url: &'a str,
    service_name: ValueStr<'a>,
    metric_name: &'a str,
    metric_description: &'a str,
    metric_unit: &'a str,
    attributes: AttrMap<'a>,
    start_time_unix: i64,
    time_unix: i64,
}

nested_column!(ExemplarAttrs, Exemplar, |e| AttrMap(&e.filtered_attributes));
nested_column!(ExemplarTimes, Exemplar, |e| nanos(e.time_unix_nano));
nested_column!(ExemplarValues, Exemplar, |e| match e.value {
    Some(exemplar::Value::AsDouble(d)) => d,
    Some(exemplar::Value::AsInt(i)) => i as f64,
    None => 0.0,
});
nested_column!(ExemplarSpanIds, Exemplar, |e| Hex(&e.span_id));
nested_column!(ExemplarTraceIds, Exemplar, |e| Hex(&e.trace_id));
nested_column!(Quantiles, ValueAtQuantile, |q| q.quantile);
nested_column!(QuantileValues, ValueAtQuantile, |q| q.value);

/// Declares a metric table's row: the shared columns, then the table's own. `Row` derive
/// needs flat structs (no `serde(flatten)`), hence the macro.
macro_rules! metric_row {
    ($(#[$doc:meta])* $name:ident with_exemplars { $($extra:tt)* }) => {
        metric_row!($(#[$doc])* $name {
            #[serde(rename = "Exemplars.FilteredAttributes")]
            pub ex_attrs: ExemplarAttrs<'a>,
            #[serde(rename = "Exemplars.TimeUnix")]
            pub ex_time: ExemplarTimes<'a>,
            #[serde(rename = "Exemplars.Value")]
            pub ex_value: ExemplarValues<'a>,
            #[serde(rename = "Exemplars.SpanId")]
            pub ex_span: ExemplarSpanIds<'a>,
            #[serde(rename = "Exemplars.TraceId")]
            pub ex_trace: ExemplarTraceIds<'a>,
            $($extra)*
        });
    };
    ($(#[$doc:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$doc])*
        #[derive(Row, Serialize)]
        #[allow(non_snake_case)]
        pub struct $name<'a> {
            pub ResourceAttributes: AttrMap<'a>,
            pub ResourceSchemaUrl: &'a str,
            pub ScopeName: &'a str,
            pub ScopeVersion: &'a str,
            pub ScopeAttributes: AttrMap<'a>,
            pub ScopeDroppedAttrCount: u32,
            pub ScopeSchemaUrl: &'a str,
            pub ServiceName: ValueStr<'a>,
            pub MetricName: &'a str,
            pub MetricDescription: &'a str,
            pub MetricUnit: &'a str,
            pub Attributes: AttrMap<'a>,
            pub StartTimeUnix: i64,
            pub TimeUnix: i64,
            $($extra)*
        }
    };
}

/// Builds a metric row from the shared columns and the table's own.
macro_rules! build_row {
    ($name:ident, $c:expr, exemplars: $ex:expr, { $($f:ident : $v:expr),* $(,)? }) => {{
        let ex: &[Exemplar] = $ex;
        build_row!($name, $c, {
            ex_attrs: ExemplarAttrs(ex),
            ex_time: ExemplarTimes(ex),
            ex_value: ExemplarValues(ex),
            ex_span: ExemplarSpanIds(ex),
            ex_trace: ExemplarTraceIds(ex),
            $($f: $v,)*
        })
    }};
    ($name:ident, $c:expr, { $($f:ident : $v:expr),* $(,)? }) => {{
        let c: MetricCommon<'_> = $c;
        $name {
            ResourceAttributes: c.resource_attributes,
            ResourceSchemaUrl: c.resource_schema_url,
            ScopeName: c.scope_name,
            ScopeVersion: c.scope_version,
            ScopeAttributes: c.scope_attributes,
            ScopeDroppedAttrCount: c.scope_dropped_attr_count,
            ScopeSchemaUrl: c.scope_schema_url,
            ServiceName: c.service_name,
            MetricName: c.metric_name,
            MetricDescription: c.metric_description,
            MetricUnit: c.metric_unit,
            Attributes: c.attributes,
            StartTimeUnix: c.start_time_unix,
            TimeUnix: c.time_unix,
            $($f: $v,)*
        }
    }};
}

metric_row!(
    /// A row of `otel_metrics_gauge`.
    GaugeRow with_exemplars {
        pub Value: f64,
        pub Flags: u32,
    }
);

metric_row!(
    /// A row of `otel_metrics_sum`.
    SumRow with_exemplars {
        pub Value: f64,
        pub Flags: u32,
        pub AggregationTemporality: i32,
        pub IsMonotonic: bool,
    }
);

metric_row!(
    /// A row of `otel_metrics_histogram`.
    HistogramRow with_exemplars {
        pub Count: u64,
        pub Sum: f64,
        pub BucketCounts: &'a [u64],
        pub ExplicitBounds: &'a [f64],
        pub Flags: u32,
        pub Min: f64,
        pub Max: f64,
        pub AggregationTemporality: i32,
    }
);

metric_row!(
    /// A row of `otel_metrics_exponential_histogram`.
    ExpHistogramRow with_exemplars {
        pub Count: u64,
        pub Sum: f64,
        pub Scale: i32,
        pub ZeroCount: u64,
        pub PositiveOffset: i32,
        pub PositiveBucketCounts: &'a [u64],
        pub NegativeOffset: i32,
        pub NegativeBucketCounts: &'a [u64],
        pub Flags: u32,
        pub Min: f64,
        pub Max: f64,
        pub AggregationTemporality: i32,
    }
);

metric_row!(
    /// A row of `otel_metrics_summary`.
    SummaryRow {
        pub Count: u64,
        pub Sum: f64,
        #[serde(rename = "ValueAtQuantiles.Quantile")]
        pub quantiles: Quantiles<'a>,
        #[serde(rename = "ValueAtQuantiles.Value")]
        pub values: QuantileValues<'a>,
        pub Flags: u32,
    }
);

/// Metric rows, one vector per table, borrowing from the request.
#[derive(Default)]
pub struct MetricRows<'a> {
    /// Gauges.
    pub gauge: Vec<GaugeRow<'a>>,
    /// Sums.
    pub sum: Vec<SumRow<'a>>,
    /// Histograms.
    pub histogram: Vec<HistogramRow<'a>>,
    /// Exponential histograms.
    pub exp_histogram: Vec<ExpHistogramRow<'a>>,
    /// Summaries.
    pub summary: Vec<SummaryRow<'a>>,
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

/// Metric data points → rows of the five metric tables.
pub fn metric_rows<'r>(req: &'r ExportMetricsServiceRequest) -> MetricRows<'r> {
    /// Gives the closure below the request's lifetime (closures do not infer it).
    fn with_lifetime<'r, F: Fn(&'r [KeyValue], u64, u64) -> MetricCommon<'r>>(f: F) -> F {
        f
    }
    let mut out = MetricRows::default();
    for rm in &req.resource_metrics {
        let resource = rm.resource.as_ref();
        let service = service_value(resource);
        for sm in &rm.scope_metrics {
            let scope = sm.scope.as_ref();
            let dropped = scope.map_or(0, |s| s.dropped_attributes_count);
            for m in &sm.metrics {
                let common = with_lifetime(|a, start, time| MetricCommon {
                    resource_attributes: resource_attrs(resource),
                    resource_schema_url: &rm.schema_url,
                    scope_name: scope.map_or("", |sc| sc.name.as_str()),
                    scope_version: scope.map_or("", |sc| sc.version.as_str()),
                    scope_attributes: AttrMap(scope.map_or(&[][..], |sc| &sc.attributes[..])),
                    scope_dropped_attr_count: dropped,
                    scope_schema_url: &sm.schema_url,
                    service_name: service,
                    metric_name: &m.name,
                    metric_description: &m.description,
                    metric_unit: &m.unit,
                    attributes: AttrMap(a),
                    start_time_unix: nanos(start),
                    time_unix: nanos(time),
                });
                match &m.data {
                    Some(Data::Gauge(g)) => out.gauge.extend(g.data_points.iter().map(|p| {
                        build_row!(GaugeRow, common(&p.attributes, p.start_time_unix_nano, p.time_unix_nano), exemplars: &p.exemplars, {
                            Value: number(&p.value),
                            Flags: p.flags,
                        })
                    })),
                    Some(Data::Sum(sum)) => out.sum.extend(sum.data_points.iter().map(|p| {
                        build_row!(SumRow, common(&p.attributes, p.start_time_unix_nano, p.time_unix_nano), exemplars: &p.exemplars, {
                            Value: number(&p.value),
                            Flags: p.flags,
                            AggregationTemporality: sum.aggregation_temporality,
                            IsMonotonic: sum.is_monotonic,
                        })
                    })),
                    Some(Data::Histogram(h)) => out.histogram.extend(h.data_points.iter().map(|p| {
                        build_row!(HistogramRow, common(&p.attributes, p.start_time_unix_nano, p.time_unix_nano), exemplars: &p.exemplars, {
                            Count: p.count,
                            Sum: p.sum.unwrap_or(0.0),
                            BucketCounts: &p.bucket_counts,
                            ExplicitBounds: &p.explicit_bounds,
                            Flags: p.flags,
                            Min: p.min.unwrap_or(0.0),
                            Max: p.max.unwrap_or(0.0),
                            AggregationTemporality: h.aggregation_temporality,
                        })
                    })),
                    Some(Data::ExponentialHistogram(h)) => out.exp_histogram.extend(h.data_points.iter().map(|p| {
                        build_row!(ExpHistogramRow, common(&p.attributes, p.start_time_unix_nano, p.time_unix_nano), exemplars: &p.exemplars, {
                            Count: p.count,
                            Sum: p.sum.unwrap_or(0.0),
                            Scale: p.scale,
                            ZeroCount: p.zero_count,
                            PositiveOffset: p.positive.as_ref().map_or(0, |b| b.offset),
                            PositiveBucketCounts: p.positive.as_ref().map_or(&[][..], |b| &b.bucket_counts[..]),
                            NegativeOffset: p.negative.as_ref().map_or(0, |b| b.offset),
                            NegativeBucketCounts: p.negative.as_ref().map_or(&[][..], |b| &b.bucket_counts[..]),
                            Flags: p.flags,
                            Min: p.min.unwrap_or(0.0),
                            Max: p.max.unwrap_or(0.0),
                            AggregationTemporality: h.aggregation_temporality,
                        })
                    })),
                    Some(Data::Summary(summary)) => out.summary.extend(summary.data_points.iter().map(|p| {
                        build_row!(SummaryRow, common(&p.attributes, p.start_time_unix_nano, p.time_unix_nano), {
                            Count: p.count,
                            Sum: p.sum,
                            quantiles: Quantiles(&p.quantile_values),
                            values: QuantileValues(&p.quantile_values),
                            Flags: p.flags,
                        })
                    })),
                    None => {}
                }
            }
        }
    }
    out
}

/// A row of `otel_profiles`: one profile sample with its resolved stack.
#[derive(Row, Serialize)]
#[allow(non_snake_case)]
pub struct ProfileRow {
    pub Timestamp: i64,
    pub ProfileId: String,
    pub SampleType: String,
    pub SampleUnit: String,
    pub ServiceName: String,
    pub ResourceAttributes: Attrs,
    pub ScopeName: String,
    pub ScopeVersion: String,
    pub ProfileAttributes: Attrs,
    pub SampleAttributes: Attrs,
    pub StackHash: u64,
    pub Addresses: Vec<u64>,
    pub FunctionNames: Vec<String>,
    pub FileNames: Vec<String>,
    pub LineNumbers: Vec<i32>,
    pub MappingFileNames: Vec<String>,
    pub Values: Vec<i64>,
    pub TimestampsUnixNano: Vec<u64>,
    pub DurationNano: u64,
    pub Period: i64,
    pub PeriodType: String,
    pub PeriodUnit: String,
    pub TraceId: String,
    pub SpanId: String,
}

/// Profile samples → rows, resolving stacks through the request's dictionary.
pub fn profile_rows(req: &ExportProfilesServiceRequest) -> Vec<ProfileRow> {
    let empty = Default::default();
    let dict = req.dictionary.as_ref().unwrap_or(&empty);
    let s = |i: i32| -> String {
        usize::try_from(i)
            .ok()
            .and_then(|i| dict.string_table.get(i))
            .cloned()
            .unwrap_or_default()
    };
    let dict_attrs = |idx: &[i32]| -> Attrs {
        idx.iter()
            .filter_map(|i| {
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| dict.attribute_table.get(i))
            })
            .map(|a| {
                let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValueStrindex(i)) => s(*i),
                    _ => value_string(a.value.as_ref()),
                };
                (s(a.key_strindex), v)
            })
            .collect()
    };
    let mut rows = Vec::new();
    for rp in &req.resource_profiles {
        let res_attrs = rp
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        let service = service_name(rp.resource.as_ref());
        for sp in &rp.scope_profiles {
            let (scope_name, scope_version, _) = scope_parts(sp.scope.as_ref());
            for p in &sp.profiles {
                let (st, su) = p
                    .sample_type
                    .as_ref()
                    .map_or((String::new(), String::new()), |v| {
                        (s(v.type_strindex), s(v.unit_strindex))
                    });
                let (pt, pu) = p
                    .period_type
                    .as_ref()
                    .map_or((String::new(), String::new()), |v| {
                        (s(v.type_strindex), s(v.unit_strindex))
                    });
                let profile_attrs = dict_attrs(&p.attribute_indices);
                for sample in &p.samples {
                    let mut row = ProfileRow {
                        Timestamp: nanos(
                            sample
                                .timestamps_unix_nano
                                .first()
                                .copied()
                                .unwrap_or(p.time_unix_nano),
                        ),
                        ProfileId: hex(&p.profile_id),
                        SampleType: st.clone(),
                        SampleUnit: su.clone(),
                        ServiceName: service.clone(),
                        ResourceAttributes: res_attrs.clone(),
                        ScopeName: scope_name.clone(),
                        ScopeVersion: scope_version.clone(),
                        ProfileAttributes: profile_attrs.clone(),
                        SampleAttributes: dict_attrs(&sample.attribute_indices),
                        StackHash: 0,
                        Addresses: Vec::new(),
                        FunctionNames: Vec::new(),
                        FileNames: Vec::new(),
                        LineNumbers: Vec::new(),
                        MappingFileNames: Vec::new(),
                        Values: sample.values.clone(),
                        TimestampsUnixNano: sample.timestamps_unix_nano.clone(),
                        DurationNano: p.duration_nano,
                        Period: p.period,
                        PeriodType: pt.clone(),
                        PeriodUnit: pu.clone(),
                        TraceId: String::new(),
                        SpanId: String::new(),
                    };
                    let locations = usize::try_from(sample.stack_index)
                        .ok()
                        .and_then(|i| dict.stack_table.get(i))
                        .map(|st| st.location_indices.as_slice())
                        .unwrap_or_default();
                    let mut hasher = std::hash::DefaultHasher::new();
                    locations.hash(&mut hasher);
                    row.StackHash = hasher.finish();
                    for li in locations {
                        let Some(loc) = usize::try_from(*li)
                            .ok()
                            .and_then(|i| dict.location_table.get(i))
                        else {
                            continue;
                        };
                        let mapping = usize::try_from(loc.mapping_index)
                            .ok()
                            .filter(|i| *i > 0)
                            .and_then(|i| dict.mapping_table.get(i))
                            .map(|m| s(m.filename_strindex))
                            .unwrap_or_default();
                        let frames: Vec<(String, String, i32)> = if loc.lines.is_empty() {
                            vec![(String::new(), String::new(), 0)]
                        } else {
                            loc.lines
                                .iter()
                                .map(|l| {
                                    let f = usize::try_from(l.function_index)
                                        .ok()
                                        .and_then(|i| dict.function_table.get(i));
                                    (
                                        f.map(|f| s(f.name_strindex)).unwrap_or_default(),
                                        f.map(|f| s(f.filename_strindex)).unwrap_or_default(),
                                        i32::try_from(l.line).unwrap_or(0),
                                    )
                                })
                                .collect()
                        };
                        for (func, file, line) in frames {
                            row.Addresses.push(loc.address);
                            row.FunctionNames.push(func);
                            row.FileNames.push(file);
                            row.LineNumbers.push(line);
                            row.MappingFileNames.push(mapping.clone());
                        }
                    }
                    if let Some(link) = usize::try_from(sample.link_index)
                        .ok()
                        .filter(|i| *i > 0)
                        .and_then(|i| dict.link_table.get(i))
                    {
                        row.TraceId = hex(&link.trace_id);
                        row.SpanId = hex(&link.span_id);
                    }
                    rows.push(row);
                }
            }
        }
    }
    rows
}

//! Sluice exporters: OTLP/JSON files, a blackhole for tests and benchmarks, and OTLP forwarding.

pub mod blackhole;
pub mod clickhouse;
pub mod file;
pub mod otlp;

pub use blackhole::BlackholeExporter;
pub use clickhouse::ClickhouseExporter;
pub use file::FileExporter;
pub use otlp::OtlpExporter;

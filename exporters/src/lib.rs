//! Sluice exporters: OTLP/JSON files, a blackhole for tests and benchmarks, OTLP forwarding,
//! ClickHouse and Kafka.

pub mod blackhole;
pub mod clickhouse;
pub mod file;
pub mod kafka;
pub mod otlp;

pub use blackhole::BlackholeExporter;
pub use clickhouse::ClickhouseExporter;
pub use file::FileExporter;
pub use kafka::KafkaExporter;
pub use otlp::OtlpExporter;

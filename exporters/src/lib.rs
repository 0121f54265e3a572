//! Sluice exporters: OTLP/JSON files, a blackhole for tests and benchmarks, OTLP forwarding,
//! ClickHouse, Kafka and Alertmanager.

sluice_core::components! {
    exporter alertmanager::AlertmanagerExporterConfig,
    exporter blackhole::BlackholeExporterConfig,
    exporter clickhouse::ClickhouseExporterConfig,
    exporter file::FileExporterConfig,
    exporter kafka::KafkaExporterConfig,
    exporter otlp::OtlpExporterConfig,
}

pub use self::clickhouse::ClickhouseExporter;
pub use self::kafka::KafkaExporter;
pub use blackhole::BlackholeExporter;
pub use file::FileExporter;
pub use otlp::OtlpExporter;

pub mod tls;

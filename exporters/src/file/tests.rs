use super::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use sluice_config::ByteSize;

fn logs(n: usize) -> Telemetry {
    Telemetry::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); n],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn writes_lines_and_rotates_keeping_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = FileExporterConfig {
        path: dir.path().to_string_lossy().into_owned(),
        max_file_size: ByteSize(2048),
        max_files: 2,
    };
    let exp = FileExporter::new(&cfg).unwrap();
    for _ in 0..40 {
        exp.export(&logs(10)).await.unwrap();
    }
    exp.shutdown().await.unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"logs.jsonl".to_owned()), "{names:?}");
    assert_eq!(names.len(), 3, "current + 2 rotated: {names:?}");
    for n in &names {
        let text = std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert!(text.len() <= 2048, "{n} is {} bytes", text.len());
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                v["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                    .as_array()
                    .unwrap()
                    .len(),
                10
            );
        }
    }
}

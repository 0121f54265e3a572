//! Issue 5, acceptance 3: a profile written during the test by a real profiler (pprof-rs sampling a
//! busy loop with SIGPROF) goes through Sluice's Pyroscope endpoint into ClickHouse (the real
//! engine, chDB behind chfront) and is found there with its service name and its samples.

use pprof::protos::Message;
use sluice_tests::{free_port, ClickHouse, Sluice};
use std::time::{Duration, Instant};

fn busy_loop_profile() -> (Vec<u8>, i64) {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(997)
        .build()
        .expect("start profiler");
    let mut x = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(700) {
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    let report = guard.report().build().expect("report");
    let profile = report.pprof().expect("pprof");
    let total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    (profile.write_to_bytes().expect("encode"), total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_profile_lands_in_clickhouse() {
    let (body, samples_taken) = busy_loop_profile();
    assert!(samples_taken > 0, "the profiler took no samples");

    let ch_dir = std::env::temp_dir().join(format!("sluice-e2e-ch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ch_dir);
    let ch = ClickHouse::start(&ch_dir);
    let pprof_port = free_port();
    let ch_url = ch.url.clone();
    let sl = Sluice::start_with("pprof-ch", move |_, _| {
        format!(
            r#"
[receivers.pprof]
type = "pprof"
http = "127.0.0.1:{pprof_port}"
[exporters.ch]
type = "clickhouse"
endpoint = "{ch_url}"
database = "otel"
min_insert_rows = 1
[pipelines.profiles]
signals = ["profiles"]
receivers = ["pprof"]
exporters = ["ch"]
"#
        )
    })
    .await;

    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{pprof_port}/ingest?name=rust-busy-loop.cpu%7Bhost%3Dci%7D&format=pprof&spyName=pprof-rs&sampleRate=997"
        ))
        .body(body)
        .send()
        .await
        .expect("ingest");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        // Until the exporter created the schema, the database does not exist yet.
        let a = ch
            .try_query("SELECT count(), sum(Values[1]), any(SampleUnit), any(ResourceAttributes['host']) FROM otel.otel_profiles WHERE ServiceName = 'rust-busy-loop' AND SampleType = 'samples' FORMAT TSV")
            .await
            .unwrap_or_else(|_| "0".into());
        if !a.starts_with('0') || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cols: Vec<&str> = answer.trim().split('\t').collect();
    assert!(
        cols[0].parse::<u64>().unwrap_or(0) > 0,
        "no rows in otel_profiles: {answer:?}\n{}",
        sl.log()
    );
    assert_eq!(
        cols[1].parse::<i64>().unwrap_or(-1),
        samples_taken,
        "sample counts differ: {answer:?}"
    );
    assert_eq!(&cols[2..], ["count", "ci"]);
    // pprof-rs also writes cpu/nanoseconds: the second Profile of the same samples.
    let types = ch
        .query("SELECT groupUniqArray(SampleType) FROM otel.otel_profiles FORMAT TSV")
        .await;
    assert!(
        types.contains("cpu") && types.contains("samples"),
        "{types}"
    );
    let frames = ch.query("SELECT countIf(has(FunctionNames, '') = 0 AND length(FunctionNames) > 0) FROM otel.otel_profiles FORMAT TSV").await;
    assert!(
        frames.trim().parse::<u64>().unwrap_or(0) > 0,
        "stacks have no function names"
    );
    assert_eq!(sl.stop(), 0);
}

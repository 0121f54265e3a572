//! Acceptance 4: OTLP profiles over gRPC and over HTTP (protobuf and JSON) are accepted and written,
//! every sample and value intact, the dictionary carried along.

use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, Line, Location, Profile, ProfilesDictionary, ResourceProfiles, Sample, ScopeProfiles,
    Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use sluice_tests::Sluice;

/// A CPU profile of `n` samples over two stacks, with values 1..=n.
fn profile_request(service: &str, n: i64) -> ExportProfilesServiceRequest {
    let strings = [
        "",
        "cpu",
        "nanoseconds",
        "main",
        "main.go",
        "work",
        "work.go",
        "samples",
        "count",
    ];
    let dictionary = ProfilesDictionary {
        string_table: strings.iter().map(|s| (*s).to_owned()).collect(),
        function_table: vec![
            Function::default(),
            Function {
                name_strindex: 3,
                filename_strindex: 4,
                ..Default::default()
            },
            Function {
                name_strindex: 5,
                filename_strindex: 6,
                ..Default::default()
            },
        ],
        location_table: vec![
            Location::default(),
            Location {
                address: 0x1000,
                lines: vec![Line {
                    function_index: 1,
                    line: 10,
                    column: 0,
                }],
                ..Default::default()
            },
            Location {
                address: 0x2000,
                lines: vec![Line {
                    function_index: 2,
                    line: 42,
                    column: 0,
                }],
                ..Default::default()
            },
        ],
        stack_table: vec![
            Stack::default(),
            Stack {
                location_indices: vec![1],
            },
            Stack {
                location_indices: vec![2, 1],
            },
        ],
        ..Default::default()
    };
    let samples = (1..=n)
        .map(|v| Sample {
            stack_index: if v % 3 == 0 { 1 } else { 2 },
            values: vec![v],
            ..Default::default()
        })
        .collect();
    let profile = Profile {
        sample_type: Some(ValueType {
            type_strindex: 1,
            unit_strindex: 2,
        }),
        period_type: Some(ValueType {
            type_strindex: 1,
            unit_strindex: 2,
        }),
        period: 10_000_000,
        time_unix_nano: 1_700_000_000_000_000_000,
        duration_nano: 10_000_000_000,
        samples,
        ..Default::default()
    };
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_profiles: vec![ScopeProfiles {
                profiles: vec![profile],
                ..Default::default()
            }],
            ..Default::default()
        }],
        dictionary: Some(dictionary),
    }
}

fn service_of(line: &Value) -> String {
    line["resourceProfiles"][0]["resource"]["attributes"][0]["value"]["stringValue"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn samples_of(line: &Value) -> Vec<i64> {
    line["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0]["samples"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    s["values"][0]
                        .as_i64()
                        .or_else(|| s["values"][0].as_str().and_then(|v| v.parse().ok()))
                        .unwrap_or(-1)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_over_grpc_and_http_are_written_intact() {
    let sl = Sluice::start("profiles").await;

    let mut client = ProfilesServiceClient::connect(format!("http://127.0.0.1:{}", sl.grpc))
        .await
        .expect("connect");
    let resp = client
        .export(profile_request("grpc-svc", 100))
        .await
        .expect("gRPC export");
    assert!(resp.into_inner().partial_success.is_none());

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/v1development/profiles", sl.http);
    let r = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(profile_request("http-proto-svc", 50).encode_to_vec())
        .send()
        .await
        .expect("HTTP protobuf");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let json = serde_json::to_vec(&profile_request("http-json-svc", 7)).expect("json");
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .expect("HTTP JSON");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    let out = sl.wait_output("profiles", |o| o.len() >= 3).await;
    assert_eq!(
        out.len(),
        3,
        "profiles are never merged: one line per request"
    );
    for (svc, n) in [
        ("grpc-svc", 100i64),
        ("http-proto-svc", 50),
        ("http-json-svc", 7),
    ] {
        let line = out
            .iter()
            .find(|l| service_of(l) == svc)
            .unwrap_or_else(|| panic!("{svc} missing"));
        let values = samples_of(line);
        assert_eq!(values.len() as i64, n, "{svc}: sample count");
        assert_eq!(
            values.iter().sum::<i64>(),
            n * (n + 1) / 2,
            "{svc}: value total"
        );
        let dict = &line["dictionary"];
        assert_eq!(
            dict["stringTable"].as_array().map(Vec::len),
            Some(9),
            "{svc}: string table"
        );
        assert_eq!(
            dict["stackTable"][2]["locationIndices"],
            serde_json::json!([2, 1]),
            "{svc}: stacks"
        );
        let p = &line["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0];
        assert_eq!(
            p["period"]
                .as_i64()
                .or_else(|| p["period"].as_str().and_then(|s| s.parse().ok())),
            Some(10_000_000)
        );
    }

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", sl.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            r#"sluice_receiver_accepted_items_total{receiver="otlp",signal="profiles"} 157"#
        ),
        "accepted samples: {metrics}"
    );
    assert_eq!(sl.stop(), 0);
}

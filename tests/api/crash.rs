//! `kill -9` during a burst of commands loses no acknowledged license.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{ServiceProcess, TestDatabase, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_acknowledged_license() {
    let database = TestDatabase::create().await;
    let mut service = ServiceProcess::start(&database.url, &[]).await;
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let http = crate::helpers::admin_client();

    let workers: Vec<_> = (0..16)
        .map(|worker| {
            let http = http.clone();
            let url = format!("{}/v1/licenses", service.address);
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for n in 0..400 {
                    let sent = http
                        .post(&url)
                        .json(&json!({"owner": format!("burst-{worker}-{n}"), "tier": "basic"}))
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    if response.status() != 201 {
                        return;
                    }
                    let Ok(body) = response.json::<Value>().await else {
                        return;
                    };
                    acknowledged.lock().unwrap().push((
                        body["license_id"].as_str().unwrap().to_owned(),
                        body["key"].as_str().unwrap().to_owned(),
                    ));
                }
            })
        })
        .collect();

    eventually(
        Duration::from_secs(60),
        "a burst of acknowledged licenses",
        || {
            let count = acknowledged.lock().unwrap().len();
            async move { (count >= 150).then_some(()) }
        },
    )
    .await;
    service.kill_9();
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 150);

    let restarted = ServiceProcess::start(&database.url, &[]).await;
    for (license_id, key) in &acknowledged {
        let response: Value = http
            .post(format!("{}/v1/licenses/validate", restarted.address))
            .json(&json!({"key": key}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            response["code"], "VALID",
            "license {license_id} was acknowledged"
        );
        assert_eq!(response["license_id"].as_str(), Some(license_id.as_str()));
    }
}

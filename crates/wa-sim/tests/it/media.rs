//! Media: the phone encrypts and uploads like the app; the client downloads
//! and decrypts exactly what was sent. Also the media fault hook.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::{TestSim, paired_client};

fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_image_and_document_arrive_decrypted_with_equal_bytes() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550800001").await;
    let bob = sim.phone("15550800002").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let image = pseudo_random(70_000, 7);
    let sent = bob
        .send_media("15550800001", "image/jpeg", None, Some("a picture"), &image)
        .await;
    let id = sent["id"].as_str().unwrap().to_string();
    assert_eq!(sent["media"]["sha256"], hex(&Sha256::digest(&image)));

    let (msg, _) = client.wait_message("the image", |_, i| i.id == id).await;
    let img = msg.image_message.as_option().expect("an image message");
    assert_eq!(img.caption.as_deref(), Some("a picture"));
    assert_eq!(img.mimetype.as_deref(), Some("image/jpeg"));
    let bytes = client.client.download(img).await.expect("image downloads");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&image));

    let doc = pseudo_random(12_345, 42);
    let sent = bob
        .send_media(
            "15550800001",
            "application/pdf",
            Some("report.pdf"),
            None,
            &doc,
        )
        .await;
    let id = sent["id"].as_str().unwrap().to_string();
    let (msg, _) = client.wait_message("the document", |_, i| i.id == id).await;
    let d = msg
        .document_message
        .as_option()
        .expect("a document message");
    assert_eq!(d.file_name.as_deref(), Some("report.pdf"));
    let bytes = client.client.download(d).await.expect("document downloads");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&doc));

    // The fault hook: the next download is corrupted, and the client notices.
    let (status, _) = sim
        .post("/faults/media", json!({"mode": "corrupt", "count": 1}))
        .await;
    assert_eq!(status, 200);
    assert!(
        client.client.download(d).await.is_err(),
        "corrupted media must fail its MAC"
    );
    let bytes = client
        .client
        .download(d)
        .await
        .expect("the fault was one-shot");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&doc));
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_image_upload_reaches_phone_with_same_sha256() {
    use whatsapp_rust::download::MediaType;
    use whatsapp_rust::waproto::whatsapp as wa;
    let sim = TestSim::start().await;
    let alice = sim.phone("15550900001").await;
    let bob = sim.phone("15550900002").await;
    let (client, _) = paired_client(&sim, &alice, "alice-web").await;

    let image = pseudo_random(30_000, 3);
    let up = client
        .client
        .upload(image.clone(), MediaType::Image, Default::default())
        .await
        .expect("upload");
    let msg = wa::Message {
        image_message: whatsapp_rust::buffa::MessageField::some(wa::message::ImageMessage {
            url: Some(up.url.clone()),
            direct_path: Some(up.direct_path.clone()),
            media_key: Some(up.media_key.to_vec()),
            file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
            file_sha256: Some(up.file_sha256.to_vec()),
            file_length: Some(up.file_length),
            mimetype: Some("image/jpeg".into()),
            caption: Some("from the client".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sent = client
        .client
        .send_message(bob.jid(), msg)
        .await
        .expect("send");
    let got = bob
        .wait_message(|m| m["id"] == sent.message_id.as_str())
        .await;
    assert_eq!(got["caption"], "from the client");
    assert_eq!(got["media"]["sha256"], hex(&Sha256::digest(&image)));
    assert_eq!(got["media"]["size"], image.len());
    client.stop().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

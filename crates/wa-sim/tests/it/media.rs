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

/// Sends `data` from `phone` to `to` as `mimetype` (a voice note when `ptt`)
/// and returns the message id.
async fn phone_sends(
    phone: &crate::support::Phone<'_>,
    to: &str,
    mimetype: &str,
    ptt: bool,
    data: &[u8],
) -> String {
    use base64::Engine as _;
    let (status, body) = phone
        .sim
        .post(
            &format!("/phones/{}/messages", phone.number),
            json!({"to": to, "media": {
                "mimetype": mimetype,
                "ptt": ptt,
                "data": base64::engine::general_purpose::STANDARD.encode(data),
            }}),
        )
        .await;
    assert_eq!(status, 201, "send {mimetype}: {body}");
    assert_eq!(body["media"]["sha256"], hex(&Sha256::digest(data)));
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_video_arrives_as_video_with_equal_bytes() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550810001").await;
    let bob = sim.phone("15550810002").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let video = pseudo_random(150_000, 11);
    let id = phone_sends(&bob, "15550810001", "video/mp4", false, &video).await;
    let (msg, _) = client.wait_message("the video", |_, i| i.id == id).await;
    let v = msg.video_message.as_option().expect("a video message");
    assert_eq!(v.mimetype.as_deref(), Some("video/mp4"));
    assert_eq!(v.file_length, Some(video.len() as u64));
    assert!(msg.image_message.as_option().is_none());
    let bytes = client.client.download(v).await.expect("video downloads");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&video));
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_audio_file_and_voice_note_arrive_as_audio_with_equal_bytes() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550820001").await;
    let bob = sim.phone("15550820002").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let song = pseudo_random(40_000, 21);
    let id = phone_sends(&bob, "15550820001", "audio/mpeg", false, &song).await;
    let (msg, _) = client
        .wait_message("the audio file", |_, i| i.id == id)
        .await;
    let a = msg.audio_message.as_option().expect("an audio message");
    assert_eq!(a.mimetype.as_deref(), Some("audio/mpeg"));
    assert_ne!(a.ptt, Some(true), "an audio file is not a voice note");
    let bytes = client.client.download(a).await.expect("audio downloads");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&song));

    let voice = pseudo_random(9_000, 22);
    let mimetype = "audio/ogg; codecs=opus";
    let id = phone_sends(&bob, "15550820001", mimetype, true, &voice).await;
    let (msg, _) = client
        .wait_message("the voice note", |_, i| i.id == id)
        .await;
    let a = msg.audio_message.as_option().expect("an audio message");
    assert_eq!(a.mimetype.as_deref(), Some(mimetype));
    assert_eq!(a.ptt, Some(true), "a voice note is push-to-talk audio");
    let bytes = client
        .client
        .download(a)
        .await
        .expect("voice note downloads");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&voice));
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_sticker_arrives_as_sticker_with_equal_bytes() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550830001").await;
    let bob = sim.phone("15550830002").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let sticker = pseudo_random(20_000, 31);
    let id = phone_sends(&bob, "15550830001", "image/webp", false, &sticker).await;
    let (msg, _) = client.wait_message("the sticker", |_, i| i.id == id).await;
    let st = msg.sticker_message.as_option().expect("a sticker message");
    assert_eq!(st.mimetype.as_deref(), Some("image/webp"));
    assert!(
        msg.image_message.as_option().is_none(),
        "a sticker is not an image"
    );
    let bytes = client.client.download(st).await.expect("sticker downloads");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&sticker));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_reupload_request_gives_a_working_path_when_the_original_expired() {
    use whatsapp_rust::download::{DownloadParams, MediaType};
    use whatsapp_rust::{MediaRetryResult, MediaReuploadRequest};

    let sim = TestSim::start().await;
    let alice = sim.phone("15550830001").await;
    let bob = sim.phone("15550830002").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let image = pseudo_random(90_000, 23);
    let id = phone_sends(&bob, "15550830001", "image/jpeg", false, &image).await;
    let (msg, info) = client.wait_message("the image", |_, i| i.id == id).await;
    let img = msg.image_message.as_option().expect("an image message");

    let (status, _) = sim
        .post("/faults/media-expiry", json!({"enabled": true}))
        .await;
    assert_eq!(status, 200);
    assert!(
        client.client.download(img).await.is_err(),
        "the original path has expired"
    );

    let media_key = img.media_key.clone().expect("a media key");
    let request = MediaReuploadRequest {
        msg_id: &id,
        chat_jid: &info.source.chat,
        media_key: &media_key,
        is_from_me: false,
        participant: None,
    };
    let result = client
        .client
        .media_reupload()
        .request(&request)
        .await
        .expect("the phone answers");
    let MediaRetryResult::Success { direct_path } = result else {
        panic!("expected a new path, got {result:?}");
    };
    assert_ne!(Some(&direct_path), img.direct_path.as_ref());
    let params = DownloadParams::encrypted(
        direct_path,
        &media_key,
        img.file_sha256.as_deref().unwrap(),
        img.file_enc_sha256.as_deref().unwrap(),
        img.file_length.unwrap(),
        MediaType::Image,
    );
    let bytes = client
        .client
        .download_from_params(&params)
        .await
        .expect("the re-uploaded path works");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&image));

    // A message the phone no longer keeps: the protocol's "not found" answer.
    let (status, body) = sim
        .post(
            "/faults/phone-forgets",
            json!({"phone": "15550830002", "id": id}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["forgotten"], true);
    let result = client
        .client
        .media_reupload()
        .request(&request)
        .await
        .expect("the phone answers");
    assert!(
        matches!(result, MediaRetryResult::NotFound),
        "expected not found, got {result:?}"
    );

    // A request under the wrong key does not decrypt for the phone.
    let id2 = phone_sends(&bob, "15550830001", "image/jpeg", false, &image).await;
    client
        .wait_message("the second image", |_, i| i.id == id2)
        .await;
    let wrong = [7u8; 32];
    let result = client
        .client
        .media_reupload()
        .request(&MediaReuploadRequest {
            msg_id: &id2,
            chat_jid: &info.source.chat,
            media_key: &wrong,
            is_from_me: false,
            participant: None,
        })
        .await
        .expect("the phone answers");
    assert!(
        matches!(result, MediaRetryResult::DecryptionError),
        "expected a decryption error, got {result:?}"
    );
    client.stop().await;
}

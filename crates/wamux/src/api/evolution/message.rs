//! `/message/send*/:instance`: text, media, voice notes, locations, contact cards,
//! reactions and polls, answered with Evolution's message record (201).
//!
//! As Evolution does, a number is first checked on WhatsApp: one without an account is a
//! 400 naming it (`[{"jid","exists":false,"number"}]`) and nothing is sent.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Evo, EvoResult, bool_field, instance, object, text_field};
use crate::AppState;
use crate::access::Scope;
use crate::api::Caller;
use crate::api::extract::ApiJson;
use crate::evolution::payload::{self, Instance};
use crate::media::MediaKind;
use crate::media::fetch;
use crate::media::send::SendOptions;
use crate::media::storage::Staged;
use crate::model::{
    ChatAddress, ContactCard, Content, Location, Message, Poll, PresenceState, Reply, SessionId,
    is_reaction_emoji,
};
use crate::session::SessionError;

pub fn router(state: &AppState) -> Router<AppState> {
    // Files come inline as base64, a third larger than the file.
    let max = state.media.config().max_bytes;
    let limit = usize::try_from(max.saturating_mul(4) / 3 + 64 * 1024)
        .unwrap_or(usize::MAX)
        .max(state.config.max_body_bytes);
    Router::new()
        .route("/message/sendText/{instance}", post(send_text))
        .route(
            "/message/sendMedia/{instance}",
            post(send_media).layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/message/sendWhatsAppAudio/{instance}",
            post(send_audio).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/message/sendLocation/{instance}", post(send_location))
        .route("/message/sendContact/{instance}", post(send_contact))
        .route("/message/sendReaction/{instance}", post(send_reaction))
        .route("/message/sendPoll/{instance}", post(send_poll))
}

/// The longest typing indicator `delay` shows (Evolution has no limit).
const MAX_DELAY: Duration = Duration::from_secs(120);

/// A send: its instance, where it goes and the options every route shares.
pub(super) struct Send {
    id: SessionId,
    to: ChatAddress,
    reply: Reply,
    delay: Option<Duration>,
}

/// Evolution's answer to a send: the message record, 201.
fn sent(id: &SessionId, msg: &Message) -> (StatusCode, Json<Value>) {
    let inst = Instance::of(id.as_str());
    (
        StatusCode::CREATED,
        Json(serde_json::to_value(payload::sent_record(msg, &inst)).unwrap_or_default()),
    )
}

/// Checks `number` on WhatsApp, as Evolution does before every send: a phone number
/// without an account is a 400 naming it. Groups and LIDs are taken as they are.
async fn recipient(state: &AppState, id: &SessionId, number: &str) -> EvoResult<ChatAddress> {
    let to = ChatAddress::parse(number).map_err(|e| Evo::bad_request(&[&e.to_string()]))?;
    if !to.as_str().ends_with("@s.whatsapp.net") {
        return Ok(to);
    }
    let checks = state
        .sessions
        .check_numbers(id, &[to.user().to_owned()])
        .await?;
    match checks.into_iter().next() {
        Some(c) if c.exists => match c.jid.as_deref().map(ChatAddress::parse) {
            Some(Ok(jid)) => Ok(jid),
            _ => Ok(to),
        },
        _ => Err(Evo::new(
            StatusCode::BAD_REQUEST,
            json!([{"jid": to.as_str(), "exists": false, "number": number}]),
        )),
    }
}

impl Send {
    /// Reads `number` and the common options (`delay`, `quoted`, `mentioned`,
    /// `mentionsEveryOne`) for the instance in the path.
    pub(super) async fn read(
        state: &AppState,
        caller: &Caller,
        name: &str,
        body: &Value,
    ) -> EvoResult<Self> {
        let id = instance(state, caller, name, Scope::Send)?;
        object(body)?;
        let number = match body.get("number") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(Evo::bad_request(&["instance requires property \"number\""]));
            }
            Some(_) => return Err(Evo::bad_request(&["Invalid format"])),
        };
        let delay = match body.get("delay") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .map(Duration::from_millis)
                    .ok_or_else(|| Evo::bad_request(&["Enter a value in milliseconds"]))?
                    .min(MAX_DELAY),
            ),
        };
        let quoted_id = match body.get("quoted").filter(|q| !q.is_null()) {
            Some(q) => Some(
                q.pointer("/key/id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| Evo::bad_request(&["quoted.key requires property \"id\""]))?,
            ),
            None => None,
        };
        let mut mentions = Vec::new();
        if let Some(list) = body.get("mentioned").filter(|m| !m.is_null()) {
            let items = list.as_array().filter(|a| a.len() <= 1024).ok_or_else(|| {
                Evo::bad_request(&["\"mentioned\" must be an array of numeric strings"])
            })?;
            for m in items {
                let a = m
                    .as_str()
                    .and_then(|s| ChatAddress::parse(s).ok())
                    .filter(|a| !a.as_str().ends_with("@g.us"))
                    .ok_or_else(|| {
                        Evo::bad_request(&["\"mentioned\" must be an array of numeric strings"])
                    })?;
                if !mentions.contains(&a.as_str().to_owned()) {
                    mentions.push(a.as_str().to_owned());
                }
            }
        }
        let to = recipient(state, &id, &number).await?;
        if bool_field(body, "mentionsEveryOne")?.unwrap_or(false) && to.as_str().ends_with("@g.us")
        {
            let group = state.sessions.group(&id, &to).await?;
            for jid in group
                .participants
                .into_iter()
                .filter_map(|p| p.jid.or(p.lid))
            {
                if !mentions.contains(&jid) {
                    mentions.push(jid);
                }
            }
        }
        Ok(Send {
            id,
            to,
            reply: Reply {
                quoted_id,
                mentions,
            },
            delay,
        })
    }

    /// Shows `typing` (or recording) for `delay`, as Evolution's `delay` does.
    async fn wait(&self, state: &AppState, shown: PresenceState) -> EvoResult<()> {
        if self.delay.is_some_and(|d| !d.is_zero()) {
            self.show(state, shown).await?;
        }
        Ok(())
    }

    /// Shows `shown` in the chat (or the account online or offline), for `delay` when
    /// given, then `paused`.
    pub(super) async fn show(&self, state: &AppState, shown: PresenceState) -> EvoResult<()> {
        let chat = shown.in_chat().then_some(&self.to);
        state.sessions.presence(&self.id, shown, chat).await?;
        if let Some(delay) = self.delay.filter(|d| !d.is_zero())
            && shown.in_chat()
        {
            tokio::time::sleep(delay).await;
            state
                .sessions
                .presence(&self.id, PresenceState::Paused, Some(&self.to))
                .await?;
        }
        Ok(())
    }

    /// Sends `content`; a quote of a message not in the history is dropped, as Evolution
    /// sends without it.
    async fn content(
        self,
        state: &AppState,
        content: Content,
    ) -> EvoResult<(StatusCode, Json<Value>)> {
        self.wait(state, PresenceState::Composing).await?;
        let msg = match state
            .sessions
            .send(&self.id, &self.to, &content, &self.reply)
            .await
        {
            Err(SessionError::QuotedNotFound(_)) => {
                let reply = Reply {
                    quoted_id: None,
                    ..self.reply.clone()
                };
                state
                    .sessions
                    .send(&self.id, &self.to, &content, &reply)
                    .await?
            }
            other => other?,
        };
        Ok(sent(&self.id, &msg))
    }

    /// Sends a file from a URL or base64 text.
    async fn file(
        self,
        state: &AppState,
        media: &str,
        opts: SendOptions,
    ) -> EvoResult<(StatusCode, Json<Value>)> {
        let m = &state.media;
        let limit = m.config().max_bytes;
        let staged = Staged::new(m.storage().staging_path());
        let media = media.trim();
        let file = if media.starts_with("http://") || media.starts_with("https://") {
            fetch::from_url(m.fetcher(), staged, media, m.config().allow_private, limit).await
        } else {
            fetch::from_base64(staged, media, limit).await
        }
        .map_err(crate::api::ApiError::from)?;
        self.upload(state, file, opts).await
    }

    /// Sends a file already received.
    async fn upload(
        self,
        state: &AppState,
        file: fetch::Incoming,
        opts: SendOptions,
    ) -> EvoResult<(StatusCode, Json<Value>)> {
        let m = &state.media;
        let shown = if opts.kind == Some(MediaKind::Ptt) {
            PresenceState::Recording
        } else {
            PresenceState::Composing
        };
        self.wait(state, shown).await?;
        let msg = m
            .send(&state.sessions, &self.id, &self.to, file, opts)
            .await
            .map_err(crate::api::ApiError::from)?;
        Ok(sent(&self.id, &msg))
    }
}

async fn send_text(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let send = Send::read(&state, &caller, &name, &body).await?;
    let text = super::required_text(&body, "text")?;
    if text.trim().is_empty() {
        return Err(Evo::bad_request(&["Text is required"]));
    }
    if text.len() > 65_536 {
        return Err(Evo::bad_request(&["text must be at most 65536 bytes"]));
    }
    send.content(&state, Content::Text(text)).await
}

async fn send_media(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    req: axum::extract::Request,
) -> EvoResult<(StatusCode, Json<Value>)> {
    use axum::extract::FromRequest as _;
    let multipart = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    // A key that may not send here stages no file either.
    instance(&state, &caller, &name, Scope::Send)?;
    let (body, upload) = if multipart {
        // Evolution's form: the fields as text parts, the file as `file`.
        let mut form = axum::extract::Multipart::from_request(req, &state)
            .await
            .map_err(|e| Evo::bad_request(&[&e.body_text()]))?;
        let mut fields = serde_json::Map::new();
        let mut upload = None;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| Evo::bad_request(&[&e.body_text()]))?
        {
            let part = field.name().unwrap_or_default().to_owned();
            if part == "file" {
                let m = &state.media;
                let staged = Staged::new(m.storage().staging_path());
                upload = Some(
                    fetch::from_field(staged, field, m.config().max_bytes)
                        .await
                        .map_err(crate::api::ApiError::from)?,
                );
            } else {
                let text = field
                    .text()
                    .await
                    .map_err(|e| Evo::bad_request(&[&e.body_text()]))?;
                fields.insert(part, text.into());
            }
        }
        (Value::Object(fields), upload)
    } else {
        let ApiJson(body) = ApiJson::<Value>::from_request(req, &state).await?;
        (body, None)
    };
    let send = Send::read(&state, &caller, &name, &body).await?;
    let kind = match text_field(&body, "mediatype")?.as_deref() {
        Some("image") => MediaKind::Image,
        Some("video") => MediaKind::Video,
        Some("audio") => MediaKind::Audio,
        Some("document") => MediaKind::Document,
        None => {
            return Err(Evo::bad_request(&[
                "instance requires property \"mediatype\"",
            ]));
        }
        Some(_) => {
            return Err(Evo::bad_request(&[
                "mediatype is not one of enum values: image,document,video,audio",
            ]));
        }
    };
    let file_name = text_field(&body, "fileName")?.filter(|n| !n.trim().is_empty());
    let opts = |file_name| -> EvoResult<SendOptions> {
        Ok(SendOptions {
            kind: Some(kind),
            mimetype: text_field(&body, "mimetype")?.filter(|m| !m.trim().is_empty()),
            file_name,
            caption: text_field(&body, "caption")?.filter(|c| !c.is_empty()),
            view_once: false,
        })
    };
    if let Some(file) = upload {
        let name = file_name.or_else(|| file.name_hint.clone());
        return send.upload(&state, file, opts(name)?).await;
    }
    let media = text_field(&body, "media")?
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| Evo::bad_request(&["Owned media must be a url or base64"]))?;
    let is_url = media.starts_with("http://") || media.starts_with("https://");
    if kind == MediaKind::Document && !is_url && file_name.is_none() {
        return Err(Evo::bad_request(&[
            "For base64 the file name must be informed.",
        ]));
    }
    send.file(&state, &media, opts(file_name)?).await
}

async fn send_audio(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let send = Send::read(&state, &caller, &name, &body).await?;
    let audio = text_field(&body, "audio")?
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| {
            Evo::bad_request(&["Owned media must be a url, base64, or valid file with buffer"])
        })?;
    // A voice note: WhatsApp plays OGG/Opus; wamux does not convert other formats.
    let opts = SendOptions {
        kind: Some(MediaKind::Ptt),
        mimetype: Some("audio/ogg; codecs=opus".into()),
        file_name: None,
        caption: None,
        view_once: false,
    };
    send.file(&state, &audio, opts).await
}

async fn send_location(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let send = Send::read(&state, &caller, &name, &body).await?;
    let degrees = |field: &str| -> EvoResult<f64> {
        match body.get(field) {
            None | Some(Value::Null) => Err(Evo::bad_request(&[&format!(
                "instance requires property \"{field}\""
            )])),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| Evo::bad_request(&[&format!("{field} is not of a type(s) number")])),
        }
    };
    let (lat, lon) = (degrees("latitude")?, degrees("longitude")?);
    let short = |field: &str| -> EvoResult<Option<String>> {
        let v = text_field(&body, field)?.filter(|v| !v.trim().is_empty());
        if v.as_ref().is_some_and(|v| v.len() > 1024) {
            return Err(Evo::bad_request(&[&format!(
                "{field} must be at most 1024 bytes"
            )]));
        }
        Ok(v)
    };
    let location = Location::new(lat, lon, short("name")?, short("address")?)
        .map_err(|e| Evo::bad_request(&[&e]))?;
    send.content(&state, Content::Location(location)).await
}

async fn send_contact(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let send = Send::read(&state, &caller, &name, &body).await?;
    let list = match body.get("contact") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 100 => a,
        None | Some(Value::Null) => {
            return Err(Evo::bad_request(&[
                "instance requires property \"contact\"",
            ]));
        }
        Some(_) => {
            return Err(Evo::bad_request(&[
                "contact must be a list of 1 to 100 contacts",
            ]));
        }
    };
    let mut cards = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let full_name = text_field(c, "fullName")?
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                Evo::bad_request(&[&format!("contact[{i}] requires property \"fullName\"")])
            })?;
        let phone = text_field(c, "phoneNumber")?.ok_or_else(|| {
            Evo::bad_request(&[&format!("contact[{i}] requires property \"phoneNumber\"")])
        })?;
        // `wuid` (digits) is the WhatsApp account the card opens; else the phone number's.
        let wuid = text_field(c, "wuid")?.unwrap_or_else(|| phone.clone());
        let digits = ChatAddress::parse(&wuid)
            .ok()
            .filter(|a| a.as_str().ends_with("@s.whatsapp.net"))
            .map(|a| a.user().to_owned())
            .ok_or_else(|| {
                Evo::bad_request(&[&format!("contact[{i}].phoneNumber is not a phone number")])
            })?;
        cards.push(
            ContactCard::for_phone(&full_name, &digits)
                .map_err(|e| Evo::bad_request(&[&format!("contact[{i}].fullName: {e}")]))?,
        );
    }
    send.content(&state, Content::Contacts(cards)).await
}

async fn send_reaction(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    object(&body)?;
    let message_id = super::key_id(&body, "/key/id")?;
    let emoji = text_field(&body, "reaction")?
        .ok_or_else(|| Evo::bad_request(&["instance requires property \"reaction\""]))?;
    if !is_reaction_emoji(&emoji) {
        return Err(Evo::bad_request(&[
            "Reaction must be a single emoji or empty string",
        ]));
    }
    let msg = state.sessions.react(&id, &message_id, &emoji).await?;
    Ok(sent(&id, &msg))
}

async fn send_poll(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let send = Send::read(&state, &caller, &name, &body).await?;
    let question = super::required_text(&body, "name")?;
    let values: Vec<String> = match body.get("values") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Evo::bad_request(&["values must be a list of strings"]))
            })
            .collect::<EvoResult<_>>()?,
        None | Some(Value::Null) => {
            return Err(Evo::bad_request(&["instance requires property \"values\""]));
        }
        Some(_) => return Err(Evo::bad_request(&["values must be a list of strings"])),
    };
    let count = match body.get("selectableCount") {
        None | Some(Value::Null) => {
            return Err(Evo::bad_request(&[
                "instance requires property \"selectableCount\"",
            ]));
        }
        Some(v) => v.as_u64().filter(|n| *n <= 10).ok_or_else(|| {
            Evo::bad_request(&["selectableCount must be less than or equal to 10"])
        })?,
    };
    if count as usize > values.len() {
        return Err(Evo::bad_request(&[&format!(
            "Error: poll.selectableCount in poll should be >= 0 and <= {}",
            values.len()
        )]));
    }
    // WhatsApp polls are single choice or any number of choices.
    let poll = Poll::new(&question, values, count != 1).map_err(|e| Evo::bad_request(&[&e]))?;
    send.content(&state, Content::poll(poll)).await
}

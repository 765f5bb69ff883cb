//! The 👍/👎 buttons' callback data, signed: `L|campcode|2357|20419|<signature>` (reaction,
//! channel, post, day issued, HMAC-SHA256 of those and the person's id, cut to 8 bytes). It fits
//! Telegram's 64-byte limit for every channel name, and a press is refused if the signature does
//! not match the person pressing, or the button is older than the configured days.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use oleg_messages::{ChannelName, PostId, PostRef, Reaction, UserId};
use sha2::Sha256;

/// Telegram's limit on callback data.
pub const MAX_CALLBACK_BYTES: usize = 64;
const SIGNATURE_BYTES: usize = 8;

/// What a valid press means.
#[derive(Debug, Clone, PartialEq)]
pub struct Press {
    pub post: PostRef,
    pub reaction: Reaction,
}

/// Why a press was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed callback data")]
    Malformed,
    #[error("bad signature")]
    Forged,
    #[error("button too old")]
    Stale,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Forged => "forged",
            Refusal::Stale => "stale",
        }
    }
}

pub struct Signer {
    secret: Vec<u8>,
    ttl_days: i64,
}

impl Signer {
    pub fn new(secret: &[u8], ttl_days: u32) -> Self {
        Self {
            secret: secret.to_vec(),
            ttl_days: i64::from(ttl_days),
        }
    }

    /// The data of the button `reaction` on `post`, for `user`, issued on `day` (days since
    /// the Unix epoch).
    pub fn sign(&self, user: UserId, post: &PostRef, reaction: Reaction, day: i64) -> String {
        let body = format!(
            "{}|{}|{}|{day}",
            reaction_code(reaction),
            post.channel,
            post.post_id
        );
        let tag = self.mac(user, &body).finalize().into_bytes();
        let signature = URL_SAFE_NO_PAD.encode(&tag[..SIGNATURE_BYTES]);
        let data = format!("{body}|{signature}");
        debug_assert!(data.len() <= MAX_CALLBACK_BYTES);
        data
    }

    /// Checks a press by `user` on `today`.
    pub fn verify(&self, user: UserId, data: &str, today: i64) -> Result<Press, Refusal> {
        let (body, signature) = data.rsplit_once('|').ok_or(Refusal::Malformed)?;
        let mut fields = body.split('|');
        let (Some(code), Some(channel), Some(post_id), Some(day), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(Refusal::Malformed);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Refusal::Malformed)?;
        // Compared in constant time.
        if signature.len() != SIGNATURE_BYTES
            || self
                .mac(user, body)
                .verify_truncated_left(&signature)
                .is_err()
        {
            return Err(Refusal::Forged);
        }
        let day: i64 = day.parse().map_err(|_| Refusal::Malformed)?;
        if today - day > self.ttl_days || day > today + 1 {
            return Err(Refusal::Stale);
        }
        let reaction = match code {
            "L" => Reaction::Like,
            "D" => Reaction::Dislike,
            _ => return Err(Refusal::Malformed),
        };
        let channel = ChannelName::parse(channel).map_err(|_| Refusal::Malformed)?;
        let post_id = post_id
            .parse()
            .ok()
            .and_then(|id| PostId::new(id).ok())
            .ok_or(Refusal::Malformed)?;
        Ok(Press {
            post: PostRef { channel, post_id },
            reaction,
        })
    }

    /// The MAC over the person's id and the button's fields.
    fn mac(&self, user: UserId, body: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(user.to_string().as_bytes());
        mac.update(b"|");
        mac.update(body.as_bytes());
        mac
    }
}

fn reaction_code(reaction: Reaction) -> &'static str {
    match reaction {
        Reaction::Like => "L",
        Reaction::Dislike => "D",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(channel: &str, id: i64) -> PostRef {
        PostRef {
            channel: ChannelName::parse(channel).unwrap(),
            post_id: PostId::new(id).unwrap(),
        }
    }

    #[test]
    fn a_signed_press_verifies_and_fits_telegrams_limit() {
        let signer = Signer::new(b"a secret of some length", 30);
        let user = UserId::new(190_233).unwrap();
        let longest = post(&"x".repeat(32), 9_999_999_999);
        for (p, reaction) in [
            (post("campcode", 2357), Reaction::Like),
            (longest, Reaction::Dislike),
        ] {
            let data = signer.sign(user, &p, reaction, 20_419);
            assert!(
                data.len() <= MAX_CALLBACK_BYTES,
                "{} bytes: {data}",
                data.len()
            );
            assert_eq!(
                signer.verify(user, &data, 20_420),
                Ok(Press { post: p, reaction })
            );
        }
    }

    #[test]
    fn forged_altered_foreign_and_stale_presses_are_refused() {
        let signer = Signer::new(b"a secret of some length", 30);
        let user = UserId::new(190_233).unwrap();
        let data = signer.sign(user, &post("campcode", 2357), Reaction::Like, 20_419);
        let other = Signer::new(b"another secret entirely", 30);
        assert_eq!(
            signer.verify(
                user,
                &other.sign(user, &post("campcode", 2357), Reaction::Like, 20_419),
                20_419
            ),
            Err(Refusal::Forged)
        );
        let flipped = data.replacen("L|", "D|", 1);
        assert_eq!(signer.verify(user, &flipped, 20_419), Err(Refusal::Forged));
        assert_eq!(
            signer.verify(UserId::new(7).unwrap(), &data, 20_419),
            Err(Refusal::Forged),
            "a button pressed by someone it was not sent to"
        );
        assert_eq!(signer.verify(user, &data, 20_450), Err(Refusal::Stale));
        for junk in [
            "",
            "L|campcode|2357",
            "x|y|z|w|v|u",
            "L|campcode|2357|20419|!!",
        ] {
            assert!(signer.verify(user, junk, 20_419).is_err(), "{junk}");
        }
    }
}

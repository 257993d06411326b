//! Mail templates: one plain-text and one HTML template (minijinja; HTML is
//! auto-escaped), filled with per-locale strings. Locales: en, de, fr, es,
//! nl; anything else falls back to English by its primary language tag.
use std::sync::OnceLock;

use minijinja::{Environment, context};

use super::Message;
use crate::core::Error;
use crate::core::ports::mail::{CodeMail, MailTemplates};

/// The built-in templates (minijinja, five locales).
#[derive(Debug, Clone, Copy, Default)]
pub struct Templates;

impl MailTemplates for Templates {
    fn login_code(&self, m: &CodeMail<'_>) -> Result<Message, Error> {
        login_code(m.locale, m.product, m.to, m.code, m.device, m.minutes)
    }
}

struct Strings {
    subject: &'static str,
    intro: &'static str,
    valid_for: &'static str,
    no_share: &'static str,
    device: &'static str,
    ignore: &'static str,
}

const EN: Strings = Strings {
    subject: "Your sign-in code for {product}",
    intro: "Use this code to sign in to {product}:",
    valid_for: "The code is valid for {minutes} minutes.",
    no_share: "Do not share this code with third parties.",
    device: "This sign-in was requested from the device \u{201c}{device}\u{201d}, which is already signed in.",
    ignore: "If you did not try to sign in, you can ignore this mail.",
};

const DE: Strings = Strings {
    subject: "Ihr Anmeldecode für {product}",
    intro: "Mit diesem Code melden Sie sich bei {product} an:",
    valid_for: "Der Code ist {minutes} Minuten lang gültig.",
    no_share: "Geben Sie diesen Code nicht an Dritte weiter.",
    device: "Diese Anmeldung wurde vom bereits angemeldeten Gerät \u{201e}{device}\u{201c} angefordert.",
    ignore: "Wenn Sie sich nicht anmelden wollten, können Sie diese E-Mail ignorieren.",
};

const FR: Strings = Strings {
    subject: "Votre code de connexion à {product}",
    intro: "Utilisez ce code pour vous connecter à {product} :",
    valid_for: "Le code est valable {minutes} minutes.",
    no_share: "Ne communiquez ce code à personne.",
    device: "Cette connexion a été demandée depuis l\u{2019}appareil \u{ab} {device} \u{bb}, déjà connecté.",
    ignore: "Si vous n\u{2019}avez pas essayé de vous connecter, ignorez ce message.",
};

const ES: Strings = Strings {
    subject: "Tu código de acceso a {product}",
    intro: "Usa este código para iniciar sesión en {product}:",
    valid_for: "El código es válido durante {minutes} minutos.",
    no_share: "No compartas este código con terceros.",
    device: "Este acceso se solicitó desde el dispositivo \u{ab}{device}\u{bb}, que ya tiene la sesión iniciada.",
    ignore: "Si no intentaste iniciar sesión, puedes ignorar este correo.",
};

const NL: Strings = Strings {
    subject: "Je inlogcode voor {product}",
    intro: "Gebruik deze code om in te loggen bij {product}:",
    valid_for: "De code is {minutes} minuten geldig.",
    no_share: "Deel deze code niet met anderen.",
    device: "Deze aanmelding is aangevraagd vanaf het al aangemelde apparaat \u{201c}{device}\u{201d}.",
    ignore: "Heb je niet geprobeerd in te loggen? Dan kun je deze e-mail negeren.",
};

/// The locales with their own texts.
pub const LOCALES: [&str; 5] = ["en", "de", "fr", "es", "nl"];

fn strings(locale: &str) -> &'static Strings {
    let primary = locale
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match primary.as_str() {
        "de" => &DE,
        "fr" => &FR,
        "es" => &ES,
        "nl" => &NL,
        _ => &EN,
    }
}

const TEXT: &str = "{{ intro }}\n\n    {{ code }}\n\n{{ valid_for }}\n{{ no_share }}\n{% if device %}\n{{ device }}\n{% endif %}\n{{ ignore }}\n";

const HTML: &str = r#"<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="font-family: sans-serif; line-height: 1.5">
<p>{{ intro }}</p>
<p style="font-size: 1.5em; font-weight: bold; letter-spacing: 0.05em">{{ code }}</p>
<p>{{ valid_for }}<br>{{ no_share }}</p>
{% if device %}<p>{{ device }}</p>{% endif %}
<p style="color: #666">{{ ignore }}</p>
</body></html>
"#;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Both are compile-time constants checked by the tests below.
        let _ = env.add_template("login_code.txt", TEXT);
        let _ = env.add_template("login_code.html", HTML);
        env
    })
}

fn render(name: &str, ctx: minijinja::Value) -> Result<String, Error> {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| Error::Internal(format!("mail template {name}: {e}")))
}

/// The sign-in code mail.
pub fn login_code(
    locale: &str,
    product: &str,
    to: &str,
    code: &str,
    device: Option<&str>,
    minutes: i64,
) -> Result<Message, Error> {
    let s = strings(locale);
    let fill = |t: &str| {
        t.replace("{product}", product)
            .replace("{minutes}", &minutes.to_string())
            .replace("{device}", device.unwrap_or(""))
    };
    let subject = fill(s.subject);
    let ctx = context! {
        lang => if std::ptr::eq(s, &EN) { "en" } else { locale.split(['-', '_']).next().unwrap_or("en") },
        subject => subject.clone(),
        intro => fill(s.intro),
        code => code,
        valid_for => fill(s.valid_for),
        no_share => s.no_share,
        device => device.map(|_| fill(s.device)),
        ignore => s.ignore,
    };
    Ok(Message {
        to: to.to_string(),
        subject,
        text: render("login_code.txt", ctx.clone())?,
        html: Some(render("login_code.html", ctx)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_renders_with_the_code_and_falls_back_to_english() {
        for l in LOCALES {
            let m = login_code(
                l,
                "TimeLimit",
                "a@example.com",
                "apple pear plum",
                Some("Pixel 7"),
                10,
            )
            .unwrap();
            assert!(m.text.contains("apple pear plum"), "{l}");
            assert!(m.text.contains("Pixel 7"), "{l}");
            assert!(m.subject.contains("TimeLimit"), "{l}");
            assert!(m.html.as_ref().unwrap().contains("apple pear plum"), "{l}");
        }
        let de = login_code("de-AT", "X", "a@example.com", "c", None, 10).unwrap();
        assert!(
            de.text
                .contains("Geben Sie diesen Code nicht an Dritte weiter.")
        );
        let fallback = login_code("pt-BR", "X", "a@example.com", "c", None, 10).unwrap();
        assert!(
            fallback
                .text
                .contains("Do not share this code with third parties.")
        );
        assert!(!fallback.text.contains("device"));
    }

    #[test]
    fn html_is_escaped() {
        let m = login_code(
            "en",
            "X",
            "a@example.com",
            "c",
            Some("<script>alert(1)</script>"),
            10,
        )
        .unwrap();
        assert!(!m.html.as_ref().unwrap().contains("<script>"));
        assert!(m.text.contains("<script>"), "plain text is not HTML");
    }
}

//! Rendering a pairing QR string as a PNG (black on white, with the standard quiet zone).

const SCALE: usize = 8;
const QUIET: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("cannot encode QR code: {0}")]
    Encode(#[from] qrcode::types::QrError),
    #[error("cannot write PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// The PNG as a `data:image/png;base64,...` URL, for JSON answers and payloads.
pub fn data_url(data: &str) -> Result<String, QrError> {
    use base64::Engine as _;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png(data)?)
    ))
}

pub fn png(data: &str) -> Result<Vec<u8>, QrError> {
    let code = qrcode::QrCode::new(data.as_bytes())?;
    let w = code.width();
    let colors = code.to_colors();
    let side = (w + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for y in 0..w {
        for x in 0..w {
            if colors[y * w + x] == qrcode::Color::Dark {
                for dy in 0..SCALE {
                    let row = ((y + QUIET) * SCALE + dy) * side;
                    let start = row + (x + QUIET) * SCALE;
                    pixels[start..start + SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_png() {
        let png = super::png("2@abc,def,ghi,jkl,9").unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}

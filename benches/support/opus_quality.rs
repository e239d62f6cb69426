//! `opus-quality`: what each Opus complexity costs and what it gives, at the configured bitrate, so the default
//! `audio.opus_complexity` is a measured choice. Three synthetic 48 kHz stereo signals (a 440 Hz tone like the
//! test sources', a speech-like harmonic signal with formants, pitch glides and pauses, and a music-like mix of
//! a chord with vibrato, a bass line and noise bursts) go through libopus with roomgate's settings (application
//! audio, 20 ms frames) and back through libavcodec's Opus decoder. Reported per complexity: the encoder's CPU
//! (% of one core for real-time audio), the SNR and the log-spectral distance (LSD, dB, lower is better; both
//! spectra floored 60 dB under each frame's peak) of the decoded signal against the input, after aligning the
//! codec delay. Then the same at the default complexity for each allowed frame duration (`audio.opus_frame_ms`),
//! with the packets per second and their mean size. No PESQ/POLQA here: these are proxies that
//! move with the quality the encoder keeps.

use ffmpeg_next as ff;
use serde_json::json;
use std::f64::consts::TAU;
use std::time::Instant;

const RATE: usize = 48_000;
/// Samples at the end left out of the comparison (the encoder's last, padded frame).
const TAIL: usize = 960;
const SECONDS: usize = 10;

/// Uniform noise in [-1, 1) from a xorshift64 generator started at `seed`: the same noise on every run, so
/// that the signals, and what is measured on them, repeat.
fn xorshift_noise(mut seed: u64) -> impl FnMut() -> f64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn tone() -> Vec<[f32; 2]> {
    (0..RATE * SECONDS)
        .map(|i| {
            let v = (TAU * 440.0 * i as f64 / RATE as f64).sin() * 0.25;
            [v as f32, v as f32]
        })
        .collect()
}

/// Voiced "syllables": harmonics of a gliding pitch shaped by two formants that move per syllable, 4 per second,
/// with short pauses and a little breath noise.
fn speech_like() -> Vec<[f32; 2]> {
    let mut noise = xorshift_noise(0x2545_F491_4F6C_DD1Du64);
    let vowels = [
        (730.0, 1090.0),
        (270.0, 2290.0),
        (300.0, 870.0),
        (530.0, 1840.0),
        (640.0, 1190.0),
    ];
    let mut phase = 0.0f64;
    (0..RATE * SECONDS)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let syllable = (t * 4.0) as usize;
            let within = t * 4.0 - syllable as f64;
            let (f1, f2) = vowels[syllable % vowels.len()];
            let f0 = 110.0 + 40.0 * (TAU * 0.7 * t).sin() + 15.0 * within;
            phase += TAU * f0 / RATE as f64;
            let env = if within < 0.8 {
                (std::f64::consts::PI * within / 0.8).sin()
            } else {
                0.0
            };
            let mut v = 0.0;
            for h in 1..40 {
                let f = f0 * h as f64;
                if f > 8000.0 {
                    break;
                }
                let formant = |c: f64, bw: f64| 1.0 / (1.0 + ((f - c) / bw).powi(2));
                v += (formant(f1, 90.0) + 0.6 * formant(f2, 120.0) + 0.02) * (phase * h as f64).sin();
            }
            let v = (v * 0.12 * env + noise() * 0.004 * env) as f32;
            [v, v]
        })
        .collect()
}

/// A chord with vibrato, a bass line, and hi-hat-like noise bursts, panned apart.
fn music_like() -> Vec<[f32; 2]> {
    let mut noise = xorshift_noise(0x9E37_79B9_7F4A_7C15u64);
    let chord = [261.63, 329.63, 392.0, 523.25];
    let bass = [65.41, 87.31, 98.0, 73.42];
    (0..RATE * SECONDS)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let vib = 1.0 + 0.004 * (TAU * 5.5 * t).sin();
            let mut l = 0.0;
            let mut r = 0.0;
            for (k, f) in chord.iter().enumerate() {
                let v = (TAU * f * vib * t).sin() + 0.3 * (TAU * 2.0 * f * vib * t).sin();
                let pan = k as f64 / 3.0;
                l += v * (1.0 - pan) * 0.08;
                r += v * pan * 0.08;
            }
            let b = bass[(t / 0.5) as usize % bass.len()];
            let bv = (TAU * b * t).sin() * 0.2;
            let beat = t * 8.0 - (t * 8.0).floor();
            let hat = noise() * 0.15 * (-beat * 40.0).exp();
            [(l + bv + hat * 0.7) as f32, (r + bv + hat) as f32]
        })
        .collect()
}

/// What one pass through the codec gave: the decoded samples, the encoder's seconds, and the packets' count and
/// bytes.
struct Roundtrip {
    decoded: Vec<[f32; 2]>,
    encoder_secs: f64,
    packets: usize,
    bytes: usize,
}

/// Encode `x` with libopus at `bitrate`/`complexity` in frames of `frame_ms` and decode it.
fn roundtrip(x: &[[f32; 2]], bitrate: u32, complexity: u8, frame_ms: u8) -> Roundtrip {
    let frame = usize::from(frame_ms) * RATE / 1000;
    let codec = ff::encoder::find_by_name("libopus").expect("libopus");
    let mut enc = ff::codec::Context::new_with_codec(codec).encoder().audio().unwrap();
    enc.set_rate(RATE as i32);
    enc.set_channel_layout(ff::ChannelLayout::STEREO);
    enc.set_channels(2);
    enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Packed));
    enc.set_bit_rate(bitrate as usize);
    enc.set_time_base(ff::Rational::new(1, RATE as i32));
    let mut opts = ff::Dictionary::new();
    opts.set("application", "audio");
    opts.set("frame_duration", &frame_ms.to_string());
    opts.set("compression_level", &complexity.to_string());
    let mut enc = enc.open_as_with(codec, opts).unwrap();
    let dec_codec = ff::decoder::find(ff::codec::Id::OPUS).expect("opus decoder");
    let mut dctx = ff::codec::Context::new_with_codec(dec_codec);
    unsafe {
        (*dctx.as_mut_ptr()).sample_rate = RATE as i32;
        (*dctx.as_mut_ptr()).ch_layout = ff::ffi::AVChannelLayout {
            order: ff::ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE,
            nb_channels: 2,
            u: ff::ffi::AVChannelLayout__bindgen_ty_1 { mask: 3 },
            opaque: std::ptr::null_mut(),
        };
    }
    let mut dec = dctx.decoder().audio().unwrap();
    let mut out = Vec::with_capacity(x.len() + RATE);
    let mut spent = 0.0;
    let (mut count, mut bytes) = (0, 0);
    let mut pkt = ff::Packet::empty();
    let mut decoded = ff::frame::Audio::empty();
    let mut drain = |dec: &mut ff::decoder::Audio, out: &mut Vec<[f32; 2]>| {
        while dec.receive_frame(&mut decoded).is_ok() {
            let n = decoded.samples();
            if decoded.is_planar() {
                let (l, r) = (decoded.plane::<f32>(0), decoded.plane::<f32>(1));
                out.extend((0..n).map(|i| [l[i], r[i]]));
            } else {
                let d = decoded.plane::<(f32, f32)>(0);
                out.extend(d[..n].iter().map(|&(l, r)| [l, r]));
            }
        }
    };
    for (k, chunk) in x.chunks_exact(frame).enumerate() {
        let mut f = ff::frame::Audio::new(
            ff::format::Sample::F32(ff::format::sample::Type::Packed),
            frame,
            ff::ChannelLayout::STEREO,
        );
        f.set_rate(RATE as u32);
        f.set_pts(Some((k * frame) as i64));
        f.plane_mut::<(f32, f32)>(0)
            .iter_mut()
            .zip(chunk)
            .for_each(|(d, s)| *d = (s[0], s[1]));
        let t0 = Instant::now();
        enc.send_frame(&f).unwrap();
        let mut packets = Vec::new();
        while enc.receive_packet(&mut pkt).is_ok() {
            packets.push(pkt.clone());
        }
        spent += t0.elapsed().as_secs_f64();
        count += packets.len();
        bytes += packets.iter().map(|p| p.size()).sum::<usize>();
        for p in packets {
            dec.send_packet(&p).unwrap();
            drain(&mut dec, &mut out);
        }
    }
    Roundtrip {
        decoded: out,
        encoder_secs: spent,
        packets: count,
        bytes,
    }
}

/// The lag (samples) at which `y` best matches `x` (the codec's delay).
fn delay(x: &[[f32; 2]], y: &[[f32; 2]]) -> usize {
    let probe = RATE..RATE * 2;
    (0..2000)
        .max_by(|&a, &b| {
            let c = |lag: usize| -> f64 {
                probe
                    .clone()
                    .map(|i| x[i][0] as f64 * y.get(i + lag).map_or(0.0, |s| s[0] as f64))
                    .sum()
            };
            c(a).partial_cmp(&c(b)).unwrap()
        })
        .unwrap_or(0)
}

fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = -TAU / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (wr, wi) = ((ang * k as f64).cos(), (ang * k as f64).sin());
                let (a, b) = (start + k, start + k + len / 2);
                let (xr, xi) = (re[b] * wr - im[b] * wi, re[b] * wi + im[b] * wr);
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] += xr;
                im[a] += xi;
            }
        }
        len <<= 1;
    }
}

/// (SNR dB, LSD dB) of `y` (aligned) against `x`, both channels, skipping the first half second.
fn distortion(x: &[[f32; 2]], y: &[[f32; 2]]) -> (f64, f64) {
    let lag = delay(x, y);
    let range = RATE / 2..(x.len() - TAIL).min(y.len().saturating_sub(lag));
    let (mut sig, mut err) = (0.0, 0.0);
    for i in range.clone() {
        for c in 0..2 {
            let (a, b) = (x[i][c] as f64, y[i + lag][c] as f64);
            sig += a * a;
            err += (a - b) * (a - b);
        }
    }
    const N: usize = 1024;
    let window: Vec<f64> = (0..N).map(|i| 0.5 - 0.5 * (TAU * i as f64 / N as f64).cos()).collect();
    let top = N * 20_000 / RATE;
    let (mut lsd_sum, mut frames) = (0.0, 0);
    let mut start = range.start;
    while start + N <= range.end {
        for c in 0..2 {
            let spectrum = |s: &dyn Fn(usize) -> f64| {
                let mut re: Vec<f64> = (0..N).map(|i| s(start + i) * window[i]).collect();
                let mut im = vec![0.0; N];
                fft(&mut re, &mut im);
                (1..top)
                    .map(|k| 10.0 * (re[k] * re[k] + im[k] * im[k] + 1e-9).log10())
                    .collect::<Vec<f64>>()
            };
            let px = spectrum(&|i| x[i][c] as f64);
            let py = spectrum(&|i| y[i + lag][c] as f64);
            // Frames of silence carry no information about the codec.
            let peak = px.iter().cloned().fold(f64::MIN, f64::max);
            if peak < -40.0 {
                continue;
            }
            // Both spectra floored 60 dB under the frame's peak: what is inaudible under the loudest part (the
            // codec's noise filling in bands the input leaves empty, say) does not count as distortion.
            let floor = peak - 60.0;
            let mse: f64 = px
                .iter()
                .zip(&py)
                .map(|(a, b)| (a.max(floor) - b.max(floor)).powi(2))
                .sum::<f64>()
                / px.len() as f64;
            lsd_sum += mse.sqrt();
            frames += 1;
        }
        start += N;
    }
    (10.0 * (sig / err.max(1e-12)).log10(), lsd_sum / frames.max(1) as f64)
}

/// Every complexity 0..=10 for every signal at `bitrate`, then every frame duration at the default complexity.
pub fn run(bitrate: u32) -> serde_json::Value {
    roomgate::media::transcode::init_libav();
    let signals: [(&str, Vec<[f32; 2]>); 3] = [
        ("tone_440hz", tone()),
        ("speech_like", speech_like()),
        ("music_like", music_like()),
    ];
    // One row: per signal SNR/LSD, and the encoder's CPU, packets per second and mean packet size over all three.
    let measure = |complexity: u8, frame_ms: u8| {
        let mut per_signal = serde_json::Map::new();
        let (mut cpu, mut packets, mut bytes) = (0.0, 0, 0);
        for (name, x) in &signals {
            let r = roundtrip(x, bitrate, complexity, frame_ms);
            let (snr, lsd) = distortion(x, &r.decoded);
            cpu += r.encoder_secs / SECONDS as f64 * 100.0;
            (packets, bytes) = (packets + r.packets, bytes + r.bytes);
            per_signal.insert(
                name.to_string(),
                json!({"snr_db": (snr * 100.0).round() / 100.0, "lsd_db": (lsd * 1000.0).round() / 1000.0}),
            );
        }
        let n = signals.len() as f64;
        let pps = packets as f64 / n / SECONDS as f64;
        let mean = bytes as f64 / packets.max(1) as f64;
        (per_signal, cpu / n, pps, mean)
    };
    let mut rows = Vec::new();
    for complexity in 0..=10u8 {
        let (per_signal, cpu, _, _) = measure(complexity, 20);
        eprintln!("bench: opus complexity {complexity}: {per_signal:?}");
        rows.push(json!({
            "complexity": complexity,
            "encoder_cpu_pct_of_core": (cpu * 1000.0).round() / 1000.0,
            "signals": per_signal,
        }));
    }
    let complexity = roomgate::config::DEFAULT_OPUS_COMPLEXITY;
    let mut frames = Vec::new();
    for frame_ms in roomgate::media::transcode::OPUS_FRAME_MS {
        let (per_signal, cpu, pps, mean) = measure(complexity, frame_ms);
        eprintln!("bench: opus {frame_ms} ms frames at complexity {complexity}: {per_signal:?}");
        frames.push(json!({
            "frame_ms": frame_ms,
            "encoder_cpu_pct_of_core": (cpu * 1000.0).round() / 1000.0,
            "packets_per_s": (pps * 10.0).round() / 10.0,
            "mean_packet_bytes": mean.round(),
            "signals": per_signal,
        }));
    }
    json!({"scenario": "opus-quality", "bitrate": bitrate, "seconds_per_signal": SECONDS, "complexities": rows,
        "frame_durations": {"complexity": complexity, "rows": frames}})
}

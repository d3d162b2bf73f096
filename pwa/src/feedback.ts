// What an operator hears, feels and sees after a scan: a short high beep and a green flash
// for OK; a long low double beep, a red flash and a vibration for an error (which stays on
// screen until dismissed).
let audio: AudioContext | null = null;

/** Call on a first tap: browsers allow sound only after a user gesture. */
export function unlockAudio(): void {
  audio ??= new AudioContext();
  void audio.resume();
}

function tone(freq: number, start: number, length: number): void {
  if (!audio) return;
  const osc = audio.createOscillator();
  const gain = audio.createGain();
  osc.frequency.value = freq;
  gain.gain.value = 0.2;
  osc.connect(gain).connect(audio.destination);
  const t = audio.currentTime + start;
  osc.start(t);
  osc.stop(t + length);
}

export function feedback(ok: boolean): void {
  if (ok) {
    tone(1760, 0, 0.08);
    navigator.vibrate?.(40);
  } else {
    tone(220, 0, 0.25);
    tone(220, 0.35, 0.25);
    navigator.vibrate?.([200, 100, 200]);
  }
  const root = document.documentElement;
  root.dataset.flash = ok ? "ok" : "error";
  setTimeout(() => delete root.dataset.flash, ok ? 250 : 600);
}

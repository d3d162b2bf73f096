// "Scan with camera": opens the back camera, reads one code, hands it to `onCode` and closes.
// The reader (native BarcodeDetector or the wasm ponyfill) is loaded only when the camera opens.
// A GS1 DataMatrix arrives as text with GS (\x1d) between fields: passed on as is.
import { useEffect, useRef, useState } from "preact/hooks";
import { Button, Notice } from "../ui";
import type { Detector } from "./detector";

/** The same code again within this time is ignored (a code held in front of the camera). */
const DEBOUNCE_MS = 1500;
/** Pause between two reads (one read in flight at a time). */
const INTERVAL_MS = 80;

// Kept across openings: reopening the camera on the same label does not read it twice at once.
let last: { code: string; at: number } | null = null;

let detectorPromise: Promise<Detector> | null = null;
function loadDetector(): Promise<Detector> {
  detectorPromise ??= import("./detector").then((m) => m.createDetector());
  detectorPromise.catch(() => (detectorPromise = null)); // try again next time
  return detectorPromise;
}

function cameraProblem(error: unknown): string {
  const name = error instanceof DOMException || error instanceof Error ? error.name : "";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return "The camera is not allowed: permission was refused. Allow the camera for this app in the browser's settings, or type or scan the code with the scanner.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found on this device. Type or scan the code with the scanner.";
    case "NotReadableError":
    case "AbortError":
      return "The camera is not available: another app may be using it. Close it and try again, or type the code.";
    default:
      return `The camera is not available (${error instanceof Error ? error.message : String(error)}). Type or scan the code with the scanner.`;
  }
}

function CameraView(props: { onCode: (code: string) => void; onClose: (problem?: string) => void }) {
  const video = useRef<HTMLVideoElement>(null);
  const section = useRef<HTMLElement>(null);
  const [state, setState] = useState("Starting the camera…");
  const handlers = useRef(props);
  handlers.current = props;

  useEffect(() => {
    let closed = false;
    let stream: MediaStream | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stop = () => {
      closed = true;
      clearTimeout(timer);
      stream?.getTracks().forEach((t) => t.stop());
      stream = null;
    };
    const fail = (problem: string) => {
      if (closed) return;
      stop();
      handlers.current.onClose(problem);
    };

    async function start() {
      if (!navigator.mediaDevices?.getUserMedia) {
        return fail(
          "The camera is not available in this browser (it needs a secure https:// page). Type or scan the code with the scanner.",
        );
      }
      const detector = loadDetector(); // in parallel with the camera permission
      detector.catch(() => undefined);
      try {
        stream = await navigator.mediaDevices.getUserMedia({
          audio: false,
          video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
        });
      } catch (error) {
        return fail(cameraProblem(error));
      }
      if (closed) return stop();
      const el = video.current!;
      el.srcObject = stream;
      try {
        await el.play();
      } catch (error) {
        if (!closed) return fail(cameraProblem(error));
        return;
      }
      if (closed) return;
      setState("Loading the barcode reader…");
      let reader: Detector;
      try {
        reader = await detector;
      } catch (error) {
        return fail(
          `The barcode reader could not be loaded (${error instanceof Error ? error.message : String(error)}). Type or scan the code with the scanner.`,
        );
      }
      if (closed) return;
      el.dataset.source = reader.source;
      setState("Point the camera at the code.");
      const tick = async () => {
        if (closed) return;
        if (el.readyState >= el.HAVE_CURRENT_DATA && el.videoWidth > 0) {
          try {
            const codes = await reader.detect(el);
            if (closed) return;
            const now = Date.now();
            const fresh = codes.find(
              (c) => c.rawValue && !(last && last.code === c.rawValue && now - last.at < DEBOUNCE_MS),
            );
            if (fresh) {
              last = { code: fresh.rawValue, at: now };
              stop();
              handlers.current.onCode(fresh.rawValue);
              handlers.current.onClose();
              return;
            }
          } catch {
            // A frame that could not be read: try the next one.
          }
        }
        if (!closed) timer = setTimeout(() => void tick(), INTERVAL_MS);
      };
      void tick();
    }

    // The whole view (its Close button first) in sight, below the sticky header.
    section.current?.scrollIntoView({ block: "start" });
    const hidden = () => document.hidden && (stop(), handlers.current.onClose());
    document.addEventListener("visibilitychange", hidden);
    void start();
    return () => {
      document.removeEventListener("visibilitychange", hidden);
      stop();
    };
  }, []);

  return (
    <section class="camera" aria-label="Camera" ref={section}>
      <Button kind="plain" onClick={() => props.onClose()}>
        Close camera
      </Button>
      <p class="camera-state" role="status">
        {state}
      </p>
      <div class="camera-frame">
        <video ref={video} class="camera-video" muted playsInline autoplay aria-label="Camera view" />
        <div class="camera-aim" aria-hidden="true" />
      </div>
    </section>
  );
}

export function CameraButton({ onCode }: { onCode: (code: string) => void }) {
  const [open, setOpen] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  return (
    <div class="camera-scan">
      {open ? (
        <CameraView
          onCode={onCode}
          onClose={(why) => {
            setOpen(false);
            if (why) setProblem(why);
          }}
        />
      ) : (
        <Button
          kind="plain"
          onClick={() => {
            setProblem(null);
            setOpen(true);
          }}
        >
          Scan with camera
        </Button>
      )}
      {problem && <Notice kind="error">{problem}</Notice>}
    </div>
  );
}

// The modal dialogs shared by the views: confirmation of a dangerous action, and
// the TOTP step-up prompt with its retry.

import { $, $$, h, replaceChildren } from "./dom.js";

/** Every dialog's [data-close] button (Cancel, ✕) closes it as "cancel". */
export function initDialogs() {
  for (const btn of $$("dialog [data-close]")) btn.addEventListener("click", () => btn.closest("dialog").close("cancel"));
}

/**
 * Ask before a dangerous action: ``title``, ``ok`` (the button's text), ``children``
 * (the dialog's body) and, with ``typed``, a word to type before OK is enabled.
 * Resolves true when confirmed, false when cancelled (Cancel, Escape).
 */
export function confirmAction({ title, ok: okText, children, typed = null }) {
  const dialog = $("#confirm-dialog");
  const ok = $("#confirm-ok");
  ok.textContent = okText;
  ok.disabled = Boolean(typed);
  $("#confirm-title").textContent = title;
  replaceChildren(
    $("#confirm-body"),
    children,
    typed
      ? h("div", { class: "field-col" }, h("label", { for: "confirm-typed" }, `Type ${typed} to confirm`),
          h("input", { id: "confirm-typed", type: "text", autocomplete: "off", spellcheck: "false", oninput: (e) => { ok.disabled = e.target.value.trim() !== typed; } }))
      : null,
  );
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    (typed ? $("#confirm-typed") : $("[data-close]", dialog)).focus();
  });
}

/** The current TOTP code from the operator, or null if they cancel. */
function askOtp(detail) {
  const dialog = $("#otp-dialog");
  $("#otp-text").textContent = `${detail || "This action needs step-up authentication."} Enter the current code from your authenticator app.`;
  $("#otp-code").value = "";
  $("#otp-error").textContent = "";
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? $("#otp-code").value.trim() : null), { once: true });
    dialog.showModal();
    $("#otp-code").focus();
  });
}

/**
 * ``request(headers)`` with TOTP step-up: while the server answers with a TOTP
 * challenge, ask for a code and send the same request again with ``X-Cockpit-OTP``.
 * Resolves with the request's result; throws its error otherwise. If the operator
 * cancels the prompt, the challenge itself is thrown (``err.wantsTotp``).
 */
export async function withTotp(request, otp = null) {
  try {
    return await request(otp ? { "X-Cockpit-OTP": otp } : {});
  } catch (err) {
    if (!err.wantsTotp) throw err;
    const code = await askOtp(otp ? "That code was not accepted." : err.detail);
    if (!code) throw err;
    return withTotp(request, code);
  }
}

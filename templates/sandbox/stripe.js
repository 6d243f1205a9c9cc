// The sandbox's stand-in for Stripe.js: just enough of it for an embedded checkout.
// `Stripe(key).createEmbeddedCheckoutPage({ fetchClientSecret })` (`initEmbeddedCheckout`
// before API 2026-03-25.dahlia) resolves to an object whose `mount(target)` shows the
// simulator's checkout page for that session in a frame, and whose `destroy()` takes it
// away; paying there leads the whole page to the session's `return_url`.
(() => {
  const base = new URL('.', document.currentScript.src).href.replace(/\/$/, '');
  window.Stripe = function Stripe(publishableKey) {
    if (typeof publishableKey !== 'string' || !publishableKey.startsWith('pk_')) {
      throw new Error('Stripe(): expected a publishable key (pk_…)');
    }
    const createEmbeddedCheckoutPage = async (options) => {
      const secret = options.clientSecret || await options.fetchClientSecret();
      const [session] = String(secret).split('_secret_');
      if (!/^cs_(test|live)_[A-Za-z0-9]+$/.test(session)) {
        throw new Error('createEmbeddedCheckoutPage: not a Checkout Session client secret');
      }
      let frame = null;
      return {
        mount(target) {
          const host = typeof target === 'string' ? document.querySelector(target) : target;
          frame = document.createElement('iframe');
          frame.title = 'Secure checkout';
          frame.name = 'embedded-checkout';
          frame.src = `${base}/checkout/${encodeURIComponent(session)}`;
          frame.style.width = '100%';
          frame.style.minHeight = '44rem';
          frame.style.border = 'none';
          host.replaceChildren(frame);
        },
        destroy() {
          if (frame) frame.remove();
          frame = null;
        },
      };
    };
    // The name since API 2026-03-25.dahlia, and the one before it.
    return { createEmbeddedCheckoutPage, initEmbeddedCheckout: createEmbeddedCheckoutPage };
  };
})();

// Signs in to /admin like an operator and looks at a fulfilled session: search, timeline,
// dead letters, stock, a partial refund, a phone-width view; a form posted without its CSRF
// token must fail.
// Usage: node admin.cjs BASE_URL ADMIN_TOKEN SESSION_ID [SCREENSHOT_DIR]
const { launch } = require('./chromium.cjs');

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function main() {
  const [base, token, session, shots] = process.argv.slice(2);
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    const page = await context.newPage();
    const shoot = async (target, name) => {
      if (shots) await target.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
    };

    // Without a cookie every page leads to the sign-in form; a wrong token is refused.
    await page.goto(`${base}/admin`);
    await page.waitForURL(`${base}/admin/login`);
    await page.getByLabel('Admin token').fill('not-the-token-at-all');
    const refused = page.waitForResponse((r) => r.url() === `${base}/admin/login`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    check((await refused).status() === 401, 'a wrong token was not refused with 401');
    await page.getByRole('alert').getByText('not the admin token').waitFor();

    await page.getByLabel('Admin token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${base}/admin`);
    const cookie = (await context.cookies()).find((c) => c.name === 'fulfilld_admin');
    check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict', 'cookie not HttpOnly/Strict');

    await page.getByLabel('Session id (or its beginning) or customer email').fill(session);
    await page.getByRole('button', { name: 'Search' }).click();
    // A form POST: the search never shows in the URL.
    await page.getByText(`Found 1 for “${session}”`).waitFor();
    check(page.url() === `${base}/admin`, `the search showed in the URL: ${page.url()}`);
    const row = page.getByRole('row').filter({ hasText: session });
    await row.getByText('fulfilled').waitFor();
    await shoot(page, 'admin-sessions');

    await row.getByRole('link', { name: session }).click();
    await page.waitForURL(`${base}/admin/sessions/${session}`);
    await page.getByRole('heading', { name: 'Events received' }).waitFor();
    await page.getByText('checkout.session.completed').first().waitFor();
    await page.getByRole('heading', { name: 'Stock movements' }).waitFor();
    await page.getByRole('cell', { name: 'receipt' }).waitFor();
    await shoot(page, 'admin-timeline');

    await page.getByRole('link', { name: 'Dead letters' }).click();
    await page.getByRole('heading', { name: 'Dead letters' }).waitFor();
    await page.getByText('No dead effects.').waitFor();

    await page.getByRole('link', { name: 'Stock' }).first().click();
    await page.waitForURL(`${base}/admin/stock`);
    const tee = page.getByRole('row').filter({ hasText: 'TEE-M' });
    await tee.getByRole('cell', { name: '23', exact: true }).waitFor();
    await shoot(page, 'admin-stock');

    // A partial refund from the session's page: checked, confirmed, made, and shown once
    // Stripe's webhook has told of it.
    await page.goto(`${base}/admin/sessions/${session}`);
    await page.getByLabel('Amount').fill('1.00');
    await page.getByRole('button', { name: 'Refund…' }).click();
    await page.getByText('Refund $1.00 to the customer?').waitFor();
    await page.getByRole('button', { name: 'Refund now' }).click();
    await page.waitForURL(/notice=refund_made&id=re_/);
    await page.getByRole('status').getByText('Stripe made refund re_').waitFor();
    const partly = page.getByText('partially_refunded').first();
    for (let tries = 0; !(await partly.isVisible()); tries += 1) {
      if (tries === 50) throw new Error('the refund never showed on the timeline');
      await page.waitForTimeout(200);
      await page.reload();
    }
    await shoot(page, 'admin-refund');

    // A form posted from elsewhere carries the cookie at most, never the CSRF token.
    const forged = await page.request.post(`${base}/admin/effects/1/retry`, { form: {} });
    check(forged.status() === 403, `a POST without CSRF token got ${forged.status()}`);
    const wrong = await page.request.post(`${base}/admin/logout`, { form: { csrf: 'f00d' } });
    check(wrong.status() === 403, `a POST with a wrong CSRF token got ${wrong.status()}`);

    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${base}/admin/sessions/${session}`);
    await phone.getByRole('heading', { name: 'Shipment' }).waitFor();
    const overflow = await phone.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    check(overflow <= 0, `the phone-width page scrolls sideways by ${overflow}px`);
    await shoot(phone, 'admin-phone');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(`${base}/admin/login`);
    await page.goto(`${base}/admin/stock`);
    await page.waitForURL(`${base}/admin/login`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

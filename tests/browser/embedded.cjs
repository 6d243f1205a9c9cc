// CHECKOUT_UI=embedded: the customer pays in Stripe's form mounted in the shop's own page
// (the sandbox's stand-in for Stripe.js), lands on the order page, and the last mug is
// then shown sold out.
// Usage: node embedded.cjs BASE_URL [SCREENSHOT_DIR]; prints the Checkout Session id.
const { launch } = require('./chromium.cjs');

async function main() {
  const [base, shots] = process.argv.slice(2);
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    const shoot = async (name) => {
      if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
    };
    const mug = () => page.locator('section.product', {
      has: page.getByRole('heading', { name: 'Enamel mug' }),
    });

    await page.goto(`${base}/`);
    await mug().getByText('1 in stock').waitFor();
    await mug().getByRole('button', { name: 'Buy' }).click();

    // Mounted in place: the shop's own address, Stripe's form in a frame.
    const form = page.frameLocator('#checkout iframe');
    await form.getByText('USD 12.00').first().waitFor();
    if (!page.url().startsWith(`${base}/`) || page.url().includes('/sandbox/')) {
      throw new Error(`the form was not mounted in the shop: ${page.url()}`);
    }
    await shoot('embedded-checkout');
    await form.getByRole('button', { name: 'Pay by card' }).click();

    await page.waitForURL(/\/after-checkout\?session_id=cs_test_/);
    await page.getByRole('heading', { name: 'Thank you for your order' }).waitFor();
    const session = new URL(page.url()).searchParams.get('session_id');

    await page.goto(`${base}/`);
    await mug().getByText('Sold out').first().waitFor();
    if (!(await mug().getByRole('button').isDisabled())) {
      throw new Error('a sold-out product can still be bought');
    }
    await shoot('sold-out');
    console.log(session);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

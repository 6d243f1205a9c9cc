// Clicks through the sandbox like a customer: storefront → hosted checkout → landing page.
// Usage: node shop.cjs BASE_URL [SCREENSHOT_DIR]; prints the Checkout Session id.
const { launch } = require('./chromium.cjs');

async function main() {
  const [base, shots] = process.argv.slice(2);
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 720 } });
    const shoot = async (name) => {
      if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
    };

    await page.goto(`${base}/`);
    const tee = page.locator('section.product', {
      has: page.getByRole('heading', { name: 'T-shirt, medium' }),
    });
    await tee.waitFor();
    await shoot('storefront');
    await tee.getByLabel('Quantity').fill('2');
    await tee.getByRole('button', { name: 'Buy' }).click();

    await page.waitForURL(/\/sandbox\/checkout\/cs_test_/);
    await page.getByText('USD 50.00').first().waitFor();
    await shoot('sandbox-checkout');
    await page.getByRole('button', { name: 'Pay by card' }).click();

    await page.waitForURL(/\/after-checkout\?session_id=cs_test_/);
    await page.getByRole('heading', { name: 'Thank you for your order' }).waitFor();
    await page.getByText('$50.00').first().waitFor();
    await shoot('landing');
    console.log(new URL(page.url()).searchParams.get('session_id'));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
